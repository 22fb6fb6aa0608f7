"""Train a genkit model: `accelerate launch train.py --config configs/ddpm_unet_mnist.yaml [key=value ...]`."""
import sys

from genkit.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
