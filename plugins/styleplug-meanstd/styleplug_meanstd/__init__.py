"""A style loss that matches the mean and standard deviation of each feature channel."""

import styleplug
from styleplug.lazy import ops  # keras.ops, imported on first use: listing plugins stays instant
from styleplug.losses.functional import mean_squared_error, moment_sums, moments_from_sums


def channel_statistics(sums, epsilon):
    """Mean and standard deviation of each channel, per image (two (N, C) tensors), from moment_sums."""
    mean, variance = moments_from_sums(sums)
    return mean, ops.sqrt(variance + epsilon)


class MeanStdLoss(styleplug.Loss):
    """Match the channel-wise mean and standard deviation of the style image's features (AdaIN statistics)."""

    name = "meanstd"
    role = "style"
    # Both statistics come from sums over positions, so a print too large for one pass runs in exact tiles.
    tiling = "statistics"
    # `styleplug losses --calibrate meanstd` on VGG19: 58 at 128 px, 61 at 256 px gives this loss the
    # Gram term's weighted size on the unstyled photo.
    default_weight = 60.0
    params = (
        styleplug.Param("statistics", str, "both", help="which statistics to match", choices=("both", "mean", "std")),
        styleplug.Param("epsilon", float, 1e-5, help="added to the variance before the square root", min=0.0, max=1.0),
    )

    def sums(self, features, target, masks=None):
        # Per layer and image: the sums of the features and of their squares over positions, and the
        # positions' count (with a mask, each position weighed by its region's weight).
        return {layer: moment_sums(features[layer], None if masks is None else masks[layer]) for layer in self.layers}

    def from_sums(self, sums, target):
        epsilon, statistics = self.options["epsilon"], self.options["statistics"]
        per_layer = {}
        for layer in self.layers:
            mean, std = channel_statistics(sums[layer], epsilon)
            target_mean, target_std = channel_statistics(target[layer], epsilon)
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
