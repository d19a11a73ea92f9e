"""A working plugin: a regularizer that pulls the mean brightness of the image to a target."""

import styleplug
from styleplug.losses.functional import mean_squared_error
from styleplug.params import Param


class BrightnessLoss(styleplug.Loss):
    """Pull the mean brightness of the generated image towards a target level."""

    name = "brightness"
    role = "regularizer"
    uses_features = False
    default_weight = 10.0
    params = (Param("level", float, 0.5, help="target mean brightness, 0 (black) to 1 (white)", min=0.0, max=1.0),)

    def call(self, features, image):
        from keras import ops

        return mean_squared_error(ops.mean(image) / 255.0, self.options["level"])


@styleplug.hookimpl
def register_losses(register):
    register(BrightnessLoss)
