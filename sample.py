"""Sample a trained genkit model into a PNG grid: `python sample.py --checkpoint runs/NAME --out grid.png`."""
import sys

from genkit.cli import sample_main

if __name__ == "__main__":
    sys.exit(sample_main())
