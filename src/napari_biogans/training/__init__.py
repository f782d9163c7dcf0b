"""Objectives and the one training loop."""

# every fluorescence model the trainer takes, in the order the CLI and the Train widget offer them;
# the -sep entries are the green-on-red separable variants (METHODS B.5)
TRAIN_MODELS = ["star", "multichannel", "multichannel-sep", "one-class", "one-class-sep", "separable", "dcgan",
                "projection", "cgan", "multichannel-masked"]
