"""The top layer: the driver (trainer loop, prompt builders, placement) and the command-line entry points."""
