"""A style loss that matches the mean and standard deviation of each feature channel."""

import styleplug
from styleplug.lazy import tf  # imports TensorFlow on first use, so listing plugins stays instant
from styleplug.losses.functional import mean_squared_error


def channel_statistics(features, epsilon):
    """Mean and standard deviation of each channel of (1, H, W, C) features, in float32."""
    features = tf.cast(features, tf.float32)
    mean, variance = tf.nn.moments(features, axes=[0, 1, 2])
    return mean, tf.sqrt(variance + epsilon)


class MeanStdLoss(styleplug.Loss):
    """Match the channel-wise mean and standard deviation of the style image's features (AdaIN statistics)."""

    name = "meanstd"
    role = "style"
    default_weight = 1.0
    params = (
        styleplug.Param("statistics", str, "both", help="which statistics to match", choices=("both", "mean", "std")),
        styleplug.Param("epsilon", float, 1e-5, help="added to the variance before the square root", min=0.0, max=1.0),
    )

    def set_target(self, features):
        epsilon = self.options["epsilon"]
        self.target = {layer: channel_statistics(value, epsilon) for layer, value in features.items()}

    def call(self, features, image):
        epsilon, statistics = self.options["epsilon"], self.options["statistics"]
        per_layer = {}
        for layer in self.layers:
            mean, std = channel_statistics(features[layer], epsilon)
            target_mean, target_std = self.target[layer]
            distance = 0.0
            if statistics in ("both", "mean"):
                distance += mean_squared_error(mean, target_mean)
            if statistics in ("both", "std"):
                distance += mean_squared_error(std, target_std)
            per_layer[layer] = distance
        return self.weighted_mean(per_layer)


@styleplug.hookimpl
def register_losses(register):
    register(MeanStdLoss)
