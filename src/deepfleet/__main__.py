from deepfleet.cli import main

main()
