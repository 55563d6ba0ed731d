"""``python -m nuimcli`` is the same as the ``nuim`` command."""

from nuimcli.cli import main

if __name__ == "__main__":
    main()
