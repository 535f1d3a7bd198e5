"""Audio teacher: LAION CLAP (HTSAT-tiny audio + RoBERTa text, non-fusion).

laion_clap builds its text branch with `RobertaModel/RobertaTokenizer.from_pretrained(
'roberta-base')`, and `import laion_clap` itself asks the Hub for three tokenizers. Offline
that needs roberta-base in the Hugging Face cache; we check for it first and fail fast with
instructions (and refuse the silently empty tokenizer transformers 5 returns offline).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaplan.teachers.common import (DEFAULT_PRECISION, TeacherUnavailable, autocast,
                                    check_precision, check_state_dict, file_sha256,
                                    read_checkpoint, require_file, require_torch)

ROBERTA_REPO = "roberta-base"
ROBERTA_FILES = ("config.json", "vocab.json", "merges.txt")
ROBERTA_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MIN_TOKENIZER_VOCAB = 50_000  # roberta-base has 50,265 tokens
CLAP_HOWTO = ("Download the LAION CLAP HTSAT-tiny non-fusion checkpoint `630k-audioset-best.pt` "
              "(https://huggingface.co/lukewys/laion_clap) and pass it as --clap-ckpt; "
              "see docs/teachers.md.")
ROBERTA_HOWTO = ("laion_clap needs `roberta-base` (weights + tokenizer) in the Hugging Face "
                 "cache: run `hf download roberta-base` on a machine with internet (or copy "
                 "~/.cache/huggingface/hub/models--roberta-base) and set HF_HUB_OFFLINE=1.")
# Buffers that exist in the model but not in older checkpoints (or vice versa).
_IGNORABLE_KEYS = ("position_ids", "token_type_ids")


def check_roberta_cache() -> None:
    """Raise TeacherUnavailable unless roberta-base is in the HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as exc:
        raise TeacherUnavailable("laion_clap needs transformers/huggingface_hub") from exc
    missing = [f for f in ROBERTA_FILES
               if not isinstance(try_to_load_from_cache(ROBERTA_REPO, f), str)]
    if not any(isinstance(try_to_load_from_cache(ROBERTA_REPO, f), str) for f in ROBERTA_WEIGHTS):
        missing.append(" or ".join(ROBERTA_WEIGHTS))
    if missing:
        raise TeacherUnavailable(f"roberta-base files missing from the HF cache: {missing}. "
                                 f"{ROBERTA_HOWTO}")


def _import_laion_clap():
    try:
        import laion_clap
    except ImportError as exc:
        raise TeacherUnavailable("the audio teacher needs laion_clap: "
                                 "pip install laion_clap (it pins numpy<2)") from exc
    return laion_clap


class ClapTeacher:
    """Encodes 1-s audio chunks (48 kHz mono) and prompt texts with laion_clap.

    precision: fp32 (default on every device, as laion_clap itself computes; tau_a = 0.038 sits
    on a 0.001 grid where one flipped segment matters) or an explicit opt-in bf16/fp16 autocast
    (bf16 overflows the mel front end's ranges less than fp16). Recorded in the cache meta.
    """

    modality = "audio"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu",
                 precision: str = DEFAULT_PRECISION, allow_random: bool = False,
                 amodel: str = "HTSAT-tiny", tmodel: str = "roberta"):
        self._torch = require_torch()
        self.device = str(device)
        self.precision = check_precision(precision)
        self.amodel, self.tmodel = amodel, tmodel
        if checkpoint:
            path = require_file(checkpoint, "CLAP checkpoint", CLAP_HOWTO)
        elif allow_random:
            path = None
        else:
            raise TeacherUnavailable(f"no CLAP checkpoint given (--clap-ckpt). {CLAP_HOWTO}")
        # read (and refuse a truncated/foreign file) before the 30-s model build
        state = None if path is None else read_checkpoint(path, self._what, CLAP_HOWTO,
                                                          weights_only=False)
        check_roberta_cache()
        laion_clap = _import_laion_clap()
        try:
            self.module = laion_clap.CLAP_Module(enable_fusion=False, amodel=amodel,
                                                 tmodel=tmodel, device=self.device)
        except OSError as exc:
            raise TeacherUnavailable(f"laion_clap could not build its text branch ({exc}). "
                                     f"{ROBERTA_HOWTO}") from None
        self._check_tokenizer()
        self.random_weights = path is None
        self.checkpoint = "random-init" if path is None else str(path)
        self.checkpoint_sha256 = "" if path is None else file_sha256(path)
        if path is not None:
            self._load_checkpoint(str(path), state)
            del state
        self.module.eval()

    def _check_tokenizer(self) -> None:
        size = len(self.module.tokenize)
        if size < MIN_TOKENIZER_VOCAB:
            raise TeacherUnavailable(f"laion_clap's RoBERTa tokenizer has only {size} tokens "
                                     f"(transformers returns an empty one when the files are "
                                     f"missing offline). {ROBERTA_HOWTO}")

    def _load_checkpoint(self, path: str, state: dict | None = None) -> None:
        """The published 630k-audioset layout (a dict with "state_dict", keys "module."-prefixed
        as laion_clap's training saves them; a bare state_dict works too), read as laion_clap's
        `load_ckpt` reads it, then a strict key/shape match: only the `position_ids` /
        `token_type_ids` buffers that transformers versions add or drop may differ. A fusion,
        wrong-architecture or truncated file is a CheckpointError naming the file."""
        if state is None:  # else: already read from `path`
            state = read_checkpoint(path, self._what, CLAP_HOWTO, weights_only=False)
        model = self.module.model
        check_state_dict(model, state, path, self._what, CLAP_HOWTO, _IGNORABLE_KEYS)
        expected = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)

    @property
    def _what(self) -> str:
        return f"LAION CLAP {self.amodel}/{self.tmodel} non-fusion"

    def describe(self, prompts: dict[str, list[str]]) -> dict[str, Any]:
        """The cache-meta entry of this teacher (enters the digest)."""
        return {"model": f"laion_clap:{self.amodel}+{self.tmodel}:non-fusion",
                "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
                "random_weights": self.random_weights, "precision": self.precision,
                "sample_rate": 48_000,
                "input": "1-s mono chunk per segment, laion_clap repeatpad to 10 s",
                "prompts": prompts}

    def preprocess(self, chunks: np.ndarray):
        """(n, 48000) float32 -> (n, 48000) tensor, int16-quantised as laion_clap does."""
        from laion_clap.training.data import float32_to_int16, int16_to_float32

        quantised = int16_to_float32(float32_to_int16(np.asarray(chunks, dtype=np.float32)))
        return self._torch.from_numpy(np.ascontiguousarray(quantised)).float()

    def encode_audio(self, waveforms) -> np.ndarray:
        """(n, 48000) tensor -> (n, 512) float32 (laion_clap's repeatpad + HTSAT path)."""
        torch = self._torch
        with torch.no_grad(), autocast(self.device, self.precision):
            out = self.module.get_audio_embedding_from_data(list(waveforms), use_tensor=True)
        return out.float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(C,) prompts -> (C, 512) float32."""
        torch = self._torch
        with torch.no_grad(), autocast(self.device, self.precision):
            out = self.module.get_text_embedding(list(texts), use_tensor=True)
        return out.float().cpu().numpy()
