"""Export a :class:`PolicySnapshot` as a TensorFlow SavedModel with a serving signature.

The model is a small ``tf.Module`` whose weights are the snapshot's numpy arrays, embedded
as graph constants, so the SavedModel holds no variables and is exactly the policy the
snapshot acts with. Its ``serving_default`` signature takes the ONNX export's input names
(without ``recurrent_in``, as there is no memory), all float32 with a dynamic batch axis:

* ``obs_0``, ``obs_1``, ... ``[batch, size_i]``, one per observation spec;
* ``action_masks`` ``[batch, sum(branches)]`` (1 = allowed), only for discrete actions;

and returns a dict:

* ``deterministic_continuous_actions`` float32 ``[batch, c]``: the mean, then
  ``clip(x, -3, 3) / 3`` (or ``tanh`` for a tanh-squashed policy), as the ONNX output;
* ``deterministic_discrete_actions`` int64 ``[batch, n_branches]``: argmax per branch;
* ``discrete_action_probs_<b>`` float32 ``[batch, branch_size]``: the masked softmax of
  branch ``b``, so a server can sample.

Load it with ``tf.saved_model.load(path).signatures["serving_default"](obs_0=..., ...)``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import Any

import numpy as np

from asynctrainer.errors import ExportError
from asynctrainer.export.onnx import OBS_CLIP, check_exportable
from asynctrainer.files import fsync_dir, fsync_tree, temp_sibling
from asynctrainer.runtime.snapshot import CONTINUOUS_CLIP, MASK_PENALTY, PolicySnapshot

__all__ = ["SIGNATURE_KEY", "export_saved_model", "saved_model_output_names"]

SIGNATURE_KEY = "serving_default"


def saved_model_output_names(snapshot: PolicySnapshot) -> list[str]:
    """The serving signature's output keys for this snapshot."""
    a = snapshot.action_spec
    names: list[str] = []
    if a.is_continuous():
        names.append("deterministic_continuous_actions")
    if a.is_discrete():
        names.append("deterministic_discrete_actions")
        names += [f"discrete_action_probs_{b}" for b in range(a.discrete_size)]
    return names


def _serving_function(tf: Any, snapshot: PolicySnapshot) -> Any:
    """A ``tf.function`` computing the snapshot's deterministic actions and branch probabilities."""
    spec = snapshot.behavior_spec
    a = spec.action_spec
    n_obs = len(spec.observation_specs)
    signature = [
        tf.TensorSpec([None, o.shape[0]], tf.float32, name=f"obs_{i}") for i, o in enumerate(spec.observation_specs)
    ]
    if a.is_discrete():
        signature.append(tf.TensorSpec([None, a.mask_size], tf.float32, name="action_masks"))

    normalise = snapshot.obs_mean is not None and snapshot.obs_std is not None
    obs_mean = np.asarray(snapshot.obs_mean)
    obs_std = np.asarray(snapshot.obs_std)
    hidden = [(np.asarray(w), np.asarray(b)) for w, b in snapshot.hidden]

    @tf.function(input_signature=signature)  # type: ignore[misc]
    def serve(*inputs: Any) -> dict[str, Any]:
        obs = list(inputs[:n_obs])
        h = obs[0] if n_obs == 1 else tf.concat(obs, axis=1)
        if normalise:
            h = tf.clip_by_value((h - tf.constant(obs_mean)) / tf.constant(obs_std), -OBS_CLIP, OBS_CLIP)
        for w, b in hidden:
            h = tf.tanh(tf.matmul(h, tf.constant(w)) + tf.constant(b))
        out: dict[str, Any] = {}
        if snapshot.continuous_head is not None:
            w, b = snapshot.continuous_head
            mean = tf.matmul(h, tf.constant(np.asarray(w))) + tf.constant(np.asarray(b))
            if snapshot.tanh_squash:
                out["deterministic_continuous_actions"] = tf.tanh(mean)
            else:
                out["deterministic_continuous_actions"] = (
                    tf.clip_by_value(mean, -CONTINUOUS_CLIP, CONTINUOUS_CLIP) / CONTINUOUS_CLIP
                )
        if snapshot.discrete_head is not None:
            w, b = snapshot.discrete_head
            mask = inputs[n_obs]
            logits = tf.matmul(h, tf.constant(np.asarray(w))) + tf.constant(np.asarray(b))
            logits = logits * mask - MASK_PENALTY * (-1.0 * mask + 1.0)
            argmaxes = []
            start = 0
            for branch, size in enumerate(a.discrete_branches):
                probs = tf.nn.softmax(logits[:, start : start + size], axis=1)
                start += size
                out[f"discrete_action_probs_{branch}"] = probs
                argmaxes.append(tf.argmax(probs, axis=1, output_type=tf.int64))
            out["deterministic_discrete_actions"] = tf.stack(argmaxes, axis=1)
        return out

    return serve


def _install(tmp: pathlib.Path, final: pathlib.Path) -> None:
    """Rename the finished ``tmp`` directory to ``final``, replacing an older export there.

    A directory cannot be renamed over a non-empty one, so an existing export is first
    renamed aside (a temporary name that start-up cleanup removes), then deleted.
    """
    if not final.exists():
        os.replace(tmp, final)
        return
    if not final.is_dir():
        raise ExportError(f"Cannot write the SavedModel to {final}: a file of that name exists.")
    old = temp_sibling(final, ".old")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_saved_model(snapshot: PolicySnapshot, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``snapshot`` as a SavedModel directory at ``path`` and return that path.

    The model is saved into a temporary sibling directory, fsynced, then renamed into place,
    so ``path`` never holds a half-written model.

    :raises ExportError: the policy cannot be expressed (e.g. non-vector observations) or
        the SavedModel cannot be written.
    """
    check_exportable(snapshot)
    if snapshot.encoders:
        raise ExportError(
            f"Cannot export behavior '{snapshot.behavior_name}' as a SavedModel: it has visual observations, "
            "which export to ONNX only (export_onnx)."
        )
    if snapshot.lstm is not None:
        raise ExportError(
            f"Cannot export behavior '{snapshot.behavior_name}' as a SavedModel: it has memory (an LSTM), "
            "which exports to ONNX only (export_onnx)."
        )
    from asynctrainer.nn.tf_setup import tf as get_tf

    tf = get_tf()
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        module = tf.Module(name="policy")
        module.serve = _serving_function(tf, snapshot)
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_KEY: module.serve.get_concrete_function()})
        fsync_tree(tmp)
        _install(tmp, final)
        fsync_dir(final.parent)
    except ExportError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(
            f"Could not write the SavedModel of behavior '{snapshot.behavior_name}' to {final}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return final
