"""Networks: PoseResNet, V2V, voxel projection, root_net, pose_net and the full model.

Import the submodules directly (``from selfpose3d.models.model import build_model``); this
package file stays light so that importing the configuration does not build any network.
"""
