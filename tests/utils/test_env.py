import random

import numpy as np
import torch

from libdet.utils.env import TORCH_VERSION, collect_env_info, seed_all_rng


def test_seed_all_rng_is_reproducible():
    assert seed_all_rng(123) == 123
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_all_rng(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    generated = seed_all_rng(None)
    assert isinstance(generated, int) and 0 <= generated < 2**31


def test_collect_env_info_reports_versions_and_ops():
    info = collect_env_info()
    assert torch.__version__ in info
    assert "torchvision" in info and "CUDA available" in info
    assert "libdet op" in info or "libdet compiled ops" in info
    assert len(TORCH_VERSION) == 2 and TORCH_VERSION >= (2, 0)


def test_cpu_has_native_bf16_reads_the_cpu_flags(tmp_path):
    from libdet.utils.env import cpu_has_native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16(str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")  # AVX-512 without bf16
    assert not cpu_has_native_bf16(str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu amx_tile amx_bf16\n")
    assert cpu_has_native_bf16(str(cpuinfo))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))


def test_cpu_model_name_reads_the_model_line(tmp_path):
    from libdet.utils.env import cpu_model_name

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n")
    assert cpu_model_name(str(cpuinfo)) == "AMD EPYC 7B13"
    assert cpu_model_name(str(tmp_path / "missing"))  # falls back to platform.processor() or "unknown"
