#!/usr/bin/env bash
# Use your own cameras, start to finish, on a stand-in studio: a synthetic scene filmed by the
# 4 ceiling-mounted cameras of the room rig, handed over as a user's capture session would be
# (per-camera videos, an anipose calibration in metres, a detector's COCO keypoints file).
#
#   docs/own_rig/walkthrough.sh [OUT] [--train]
#
# OUT (default runs/own_rig) gets studio/ (what the user brings), root/ (the imported
# Panoptic-layout recording), parquet/ (the ingested dataset), pred/ (3D poses with track ids,
# by triangulation), vis/ (overlays, 3D scenes, the mosaic video), and with --train also run/
# (a short self-supervised training), pred_model/ and export/. The pictures of the README
# are copied to docs/images/. Run it from the repository root with the venv active; without
# --train it takes under a minute on 2 cores; --train adds about 10 minutes (450 steps).
set -euo pipefail

OUT=runs/own_rig
TRAIN=0
for arg in "$@"; do
  case "$arg" in
    --train) TRAIN=1 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $arg (usage: $0 [OUT] [--train])" >&2; exit 2 ;;
    *) OUT=$arg ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PRESET=$REPO/configs/cpu.yaml
STUDIO=$OUT/studio
SEQ=take1
# The stand-in's camera room_01 started recording 4 frames before the others (as cameras
# started by hand do); its frame i + 4 is the others' frame i. Find your own offsets from an
# event every camera sees (a clap, a flash) and give them to import-recording.
OFFSET=room_01=4

# Echo a command as it could be pasted (empty or unusual arguments single-quoted), then run it.
run() {
  local shown=() arg
  for arg in "$@"; do
    if [[ -z "$arg" || "$arg" =~ [^][A-Za-z0-9_./=:,+@%-] ]]; then
      shown+=("'$arg'")
    else
      shown+=("$arg")
    fi
  done
  echo
  echo "\$ ${shown[*]}"
  "$@"
}

# 0. The user's studio: replace this step with your own calibration, videos and detections.
run python "$REPO/docs/own_rig/make_recording.py" "$OUT" --early "$OFFSET"

# 1. The rig: cameras and the capture space that at least 2 of them see. Its last line is the
#    --set overrides that put the preset's 3D search space on it (root voxels no larger than
#    the preset's); train and predict --triangulate get them. The anipose file has no unit:
#    its translations are in the unit the board was measured in, here metres (--unit m).
echo
echo "\$ selfpose3d rig info $STUDIO/calibration.toml --unit m --config $PRESET"
selfpose3d rig info "$STUDIO/calibration.toml" --unit m --config "$PRESET" \
  | tee "$OUT/rig_info.txt"
SPACE=()
while read -r key_value; do
  SPACE+=(--set "$key_value")
done < <(grep -o 'model\.[a-z_]*=\[[^]]*\]' "$OUT/rig_info.txt")
if [ "${#SPACE[@]}" -ne 6 ]; then
  echo "expected 3 --set overrides in $OUT/rig_info.txt" >&2
  exit 1
fi

# 2. The recording: one video (or image folder) per camera, named after the rig's cameras,
#    synchronised by frame index after the offsets. --engine ray (the default) spreads long
#    recordings over a Ray cluster; one process is quicker for a minute of video.
run selfpose3d import-recording --rig "$STUDIO/calibration.toml" --unit m \
  --input "$STUDIO/rec" --out "$OUT/root" --sequence "$SEQ" --offset "$OFFSET" \
  --engine plain --overwrite --quiet

# 3. Pseudo 2D labels from the detector's COCO keypoints file. With local Keypoint R-CNN
#    weights instead (never downloaded; --engine ray runs one detector per GPU or CPU):
#      selfpose3d pseudo-label ROOT --weights keypointrcnn_resnet50_fpn_coco-fc266e95.pth
run selfpose3d pseudo-label "$OUT/root" --coco "$STUDIO/detections.json" --overwrite --quiet

# 4. Ingest into sharded Parquet (what training reads), images resized to the preset's
#    data.image_width x data.image_height (480 x 270).
run selfpose3d ingest "$OUT/root" --config "$PRESET" --out "$OUT/parquet" --engine plain \
  --overwrite --quiet

# 5. Optional: self-supervised training on the recording, with the rig's capture space and a
#    small budget (50 steps an epoch: 450 steps over the root, pose and finetune stages), then
#    3D poses from the trained model and its export for inference without the training code.
#    The recording has no 3D ground truth: train says so and does not score the run.
if [ "$TRAIN" -eq 1 ]; then
  RESUME=()
  if [ -f "$OUT/run/config.yaml" ]; then
    RESUME=(--resume)
  fi
  run selfpose3d train --config "$PRESET" "${SPACE[@]}" --set train.max_steps_per_epoch=50 \
    --data "$OUT/parquet" --out "$OUT/run" \
    --tracking-uri "sqlite:///$(cd "$OUT" && pwd)/mlflow.db" "${RESUME[@]}"
  run selfpose3d predict --checkpoint "$OUT/run" --data "$OUT/root" --out "$OUT/pred_model" \
    --overwrite --quiet
  run selfpose3d export --checkpoint "$OUT/run" --out "$OUT/export"
fi

# 6. 3D poses with track ids by triangulating the pseudo labels (no model needed).
run selfpose3d predict --triangulate --config "$PRESET" "${SPACE[@]}" --data "$OUT/root" \
  --out "$OUT/pred" --overwrite --quiet

# 7. Pictures: overlays of every view, 3D scenes, the mosaic video.
run selfpose3d visualize --predictions "$OUT/pred" --data "$OUT/root" --out "$OUT/vis"

# 8. The README's pictures: the middle rendered frame's overlay mosaic (at most 1200 px wide,
#    JPEG quality 80) and its 3D scene.
overlays=("$OUT"/vis/overlays/"$SEQ"_*.jpg)
if [ ! -f "${overlays[0]}" ]; then
  echo "no overlay in $OUT/vis/overlays" >&2
  exit 1
fi
overlay=${overlays[$(( ${#overlays[@]} / 2 ))]}
frame=$(basename "$overlay" .jpg)
scene=$OUT/vis/scene_$frame.png
mkdir -p "$REPO/docs/images"
python - "$overlay" "$scene" "$REPO/docs/images" <<'EOF'
import shutil
import sys
from pathlib import Path

import cv2

overlay, scene, images = sys.argv[1], sys.argv[2], Path(sys.argv[3])
mosaic = cv2.imread(overlay)
scale = min(1.0, 1200 / mosaic.shape[1])
if scale < 1.0:
    size = (round(mosaic.shape[1] * scale), round(mosaic.shape[0] * scale))
    mosaic = cv2.resize(mosaic, size, interpolation=cv2.INTER_AREA)
cv2.imwrite(str(images / "own_rig_overlay.jpg"), mosaic, [cv2.IMWRITE_JPEG_QUALITY, 80])
shutil.copyfile(scene, images / "own_rig_scene.png")
for name in ("own_rig_overlay.jpg", "own_rig_scene.png"):
    kb = (images / name).stat().st_size / 1000
    print(f"wrote {images / name} ({kb:.0f} kB)")
    if kb >= 300:
        sys.exit(f"{name} is {kb:.0f} kB, more than 300 kB")
EOF
