"""`python -m bavos` (and `torchrun -m bavos ...`)."""

from bavos.cli import main

if __name__ == "__main__":
    main()
