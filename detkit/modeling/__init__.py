"""The building blocks of detkit's detectors: backbones, FPN, RPN, RoI heads,
SSD head and neck, the input transform, weight initialisers.

This package is internal: its modules take built submodules and plain values,
and their signatures may change between releases. The public, stable way to get
a model is the zoo, `detkit.models` (`detkit.models.build("ssd300_vgg16")`,
torchvision-style builder functions), which assembles these blocks and loads
checkpoints; use these classes directly only to compose a detector of your own.
"""
