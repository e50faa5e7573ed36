"""``python -m fsar`` (also what ``torchrun -m fsar extract ...`` runs on every rank)."""

from fsar.cli import main

main()
