"""``python -m vmdev`` runs the command line."""

from vmdev.cli import main

main()
