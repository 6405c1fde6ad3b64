"""Reads a TensorBoard run folder with the real TensorBoard and prints what it found as JSON.

Usage: read_events.py RUN_DIR

Used by tests/tensorboard_roundtrip.rs to check that the event files written by ebm-log are
what TensorBoard reads. Output:

{
  "scalars":    {tag: [[step, value], ...]},
  "images":     {tag: [{"step", "width", "height", "png_hex"}]},
  "histograms": {tag: [{"step", "min", "max", "num", "sum", "sum_squares",
                        "bucket_limit", "bucket"}]},
  "text":       {tag: [{"step", "text"}]},
  "hparams":    {tag: HParamsPluginData as a JSON dict}
}
"""

import json
import sys

from google.protobuf import json_format
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util


def main(run_dir):
    ea = event_accumulator.EventAccumulator(
        run_dir,
        size_guidance={
            event_accumulator.SCALARS: 0,
            event_accumulator.IMAGES: 0,
            event_accumulator.HISTOGRAMS: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    ea.Reload()
    tags = ea.Tags()
    out = {"scalars": {}, "images": {}, "histograms": {}, "text": {}, "hparams": {}}
    for tag in tags["scalars"]:
        out["scalars"][tag] = [[e.step, e.value] for e in ea.Scalars(tag)]
    for tag in tags["images"]:
        out["images"][tag] = [
            {
                "step": e.step,
                "width": e.width,
                "height": e.height,
                "png_hex": e.encoded_image_string.hex(),
            }
            for e in ea.Images(tag)
        ]
    for tag in tags["histograms"]:
        rows = []
        for e in ea.Histograms(tag):
            h = e.histogram_value
            rows.append(
                {
                    "step": e.step,
                    "min": h.min,
                    "max": h.max,
                    "num": h.num,
                    "sum": h.sum,
                    "sum_squares": h.sum_squares,
                    "bucket_limit": list(h.bucket_limit),
                    "bucket": list(h.bucket),
                }
            )
        out["histograms"][tag] = rows
    try:
        text_tags = set(ea.PluginTagToContent("text").keys())
    except KeyError:
        text_tags = set()
    for tag in sorted(text_tags):
        rows = []
        for e in ea.Tensors(tag):
            arr = tensor_util.make_ndarray(e.tensor_proto)
            rows.append({"step": e.step, "text": arr.flatten()[0].decode("utf-8")})
        out["text"][tag] = rows
    try:
        hp = ea.PluginTagToContent("hparams")
    except KeyError:
        hp = {}
    for tag, content in hp.items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        out["hparams"][tag] = json_format.MessageToDict(data)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: read_events.py RUN_DIR")
    main(sys.argv[1])
