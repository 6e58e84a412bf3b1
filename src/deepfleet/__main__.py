from deepfleet.cli import main

# The guard matters: spawned worker processes (batch predict --nproc) import this module.
if __name__ == "__main__":
    main()
