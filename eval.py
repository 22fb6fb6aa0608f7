"""Score a trained genkit MNIST model: `python eval.py --checkpoint runs/NAME --num 10000`."""
import sys

from genkit.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
