"""Writes a GGUF v3 file for llama.cpp's `llama` architecture from a trained model and tokenizer.

Layout (all little-endian): magic "GGUF", version, tensor count, metadata count, the metadata
key/values, the tensor descriptors, padding to the alignment, then each tensor's data at an
aligned offset. A PyTorch Linear weight [out, in] is row-major, which is GGUF's [in, out] order
(GGUF lists the fastest-varying dimension first).
"""
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT_BYTES = 32

# Metadata value types.
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
# Tensor element types.
GGML_F32, GGML_F16 = 0, 1
# llama_ftype: "mostly F16".
FILE_TYPE_MOSTLY_F16 = 1
# llama.cpp token types.
TOKEN_NORMAL, TOKEN_CONTROL = 1, 3

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _string(value: str) -> bytes:
    encoded = value.encode("utf-8")
    return struct.pack("<Q", len(encoded)) + encoded


def _value(kind: int, value) -> bytes:
    if kind == UINT32:
        return struct.pack("<I", value)
    if kind == INT32:
        return struct.pack("<i", value)
    if kind == FLOAT32:
        return struct.pack("<f", value)
    if kind == BOOL:
        return struct.pack("<?", value)
    if kind == STRING:
        return _string(value)
    raise ValueError(f"unsupported metadata type {kind}")


def _metadata_entry(key: str, kind: int, value, element_kind: int = 0) -> bytes:
    out = _string(key) + struct.pack("<I", kind)
    if kind == ARRAY:
        out += struct.pack("<IQ", element_kind, len(value))
        return out + b"".join(_value(element_kind, item) for item in value)
    return out + _value(kind, value)


def _pad(length: int) -> int:
    return (ALIGNMENT_BYTES - length % ALIGNMENT_BYTES) % ALIGNMENT_BYTES


def llama_tensors(state, config):
    """(GGUF name, numpy array) pairs; matrices become F16, norm vectors stay F32 as llama.cpp expects."""
    def matrix(name):
        return state[name].detach().cpu().float().numpy().astype(np.float16)

    def vector(name):
        return state[name].detach().cpu().float().numpy().astype(np.float32)

    tensors = [("token_embd.weight", matrix("tok_embeddings.weight"))]
    for i in range(config.n_layer):
        p = f"layers.{i}."
        # Q and K go out unpermuted: the model's RoPE already rotates adjacent pairs, the ordering
        # llama.cpp's `llama` architecture uses (see model.py).
        tensors += [
            (f"blk.{i}.attn_norm.weight", vector(p + "attn_norm.weight")),
            (f"blk.{i}.attn_q.weight", matrix(p + "wq.weight")),
            (f"blk.{i}.attn_k.weight", matrix(p + "wk.weight")),
            (f"blk.{i}.attn_v.weight", matrix(p + "wv.weight")),
            (f"blk.{i}.attn_output.weight", matrix(p + "wo.weight")),
            (f"blk.{i}.ffn_norm.weight", vector(p + "ffn_norm.weight")),
            (f"blk.{i}.ffn_gate.weight", matrix(p + "w_gate.weight")),
            (f"blk.{i}.ffn_up.weight", matrix(p + "w_up.weight")),
            (f"blk.{i}.ffn_down.weight", matrix(p + "w_down.weight")),
        ]
    tensors.append(("output_norm.weight", vector("norm.weight")))
    return tensors  # no output.weight: llama.cpp ties the head to token_embd.weight


def llama_metadata(config, tokenizer, name: str, bos_id: int, eos_id: int, pad_id: int):
    token_types = [TOKEN_CONTROL if t in tokenizer.special_tokens else TOKEN_NORMAL for t in tokenizer.tokens]
    return [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, name),
        ("general.license", STRING, "MIT"),
        ("general.file_type", UINT32, FILE_TYPE_MOSTLY_F16),
        ("llama.context_length", UINT32, config.context_length),
        ("llama.embedding_length", UINT32, config.n_embd),
        ("llama.block_count", UINT32, config.n_layer),
        ("llama.feed_forward_length", UINT32, config.n_ff),
        ("llama.attention.head_count", UINT32, config.n_head),
        ("llama.attention.head_count_kv", UINT32, config.n_head_kv),
        ("llama.attention.layer_norm_rms_epsilon", FLOAT32, config.rms_eps),
        ("llama.rope.freq_base", FLOAT32, config.rope_base),
        ("llama.rope.dimension_count", UINT32, config.head_dim),
        ("llama.vocab_size", UINT32, len(tokenizer.tokens)),
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "qwen2"),
        ("tokenizer.ggml.tokens", ARRAY, tokenizer.tokens, STRING),
        ("tokenizer.ggml.token_type", ARRAY, token_types, INT32),
        ("tokenizer.ggml.merges", ARRAY, [f"{a} {b}" for a, b in tokenizer.merges], STRING),
        ("tokenizer.ggml.bos_token_id", UINT32, bos_id),
        ("tokenizer.ggml.eos_token_id", UINT32, eos_id),
        ("tokenizer.ggml.eot_token_id", UINT32, eos_id),
        ("tokenizer.ggml.padding_token_id", UINT32, pad_id),
        ("tokenizer.ggml.add_bos_token", BOOL, False),
        ("tokenizer.ggml.add_eos_token", BOOL, False),
        ("tokenizer.chat_template", STRING, CHATML_TEMPLATE),
    ]


def write_gguf(path: str, metadata, tensors) -> int:
    """Writes the file and returns its size in bytes."""
    header = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(metadata))
    header += b"".join(_metadata_entry(*entry) for entry in metadata)
    offset = 0
    blobs = []
    for name, array in tensors:
        kind = {np.dtype(np.float32): GGML_F32, np.dtype(np.float16): GGML_F16}[array.dtype]
        dims = list(reversed(array.shape))
        header += _string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        header += struct.pack("<IQ", kind, offset)
        blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        blobs.append(blob + b"\0" * _pad(len(blob)))
        offset += len(blobs[-1])
    header += b"\0" * _pad(len(header))
    with open(path, "wb") as handle:
        handle.write(header)
        for blob in blobs:
            handle.write(blob)
    return len(header) + offset
