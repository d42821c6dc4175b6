"""`python -m hamacho` runs the command-line interface."""

from hamacho.cli import main

if __name__ == "__main__":
    main()
