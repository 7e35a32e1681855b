"""Runs llama.cpp's own convert_hf_to_gguf.py (from the pinned source) on a checkpoint directory.

Generated checkpoints have vocabularies no released tokenizer has, so the converter's
check-text hash cannot name their pre-tokenizer and it stops; given PRE, its
`get_vocab_base_pre` answers PRE (the name kiln is given with --tokenizer-pre) and nothing else
of the converter changes.
Usage: convert-hf-reference.py LLAMA_CPP_SRC CHECKPOINT_DIR OUT_GGUF [PRE]
"""
import runpy
import sys

src, ckpt, out = sys.argv[1:4]
pre = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
sys.path.insert(0, src)
sys.path.insert(1, f"{src}/gguf-py")
if pre:
    import conversion.base as base

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = ["convert_hf_to_gguf.py", ckpt, "--outtype", "f32", "--outfile", out]
runpy.run_path(f"{src}/convert_hf_to_gguf.py", run_name="__main__")
