"""zprl: steering robot manipulation policies with bottleneck latent RL."""

__version__ = "0.1.0"
