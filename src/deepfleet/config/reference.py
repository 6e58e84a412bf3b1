"""python -m deepfleet.config.reference > docs/job-file.md"""

from deepfleet.config._reference import reference_markdown

if __name__ == "__main__":
    print(reference_markdown(), end="")
