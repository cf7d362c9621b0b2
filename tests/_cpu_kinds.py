"""The CPU kinds unetkit tells apart, as their ``/proc/cpuinfo`` shows them (for ``simulate_cpu``)."""

# Real /proc/cpuinfo flag lines (abridged to the tracked flags plus neighbours) of each kind met so far.
CPU_KINDS = {
    "x86-amx": ("x86_64", "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 "
                          "amx_tile amx_int8 avx_vnni"),
    "x86-avx512-bf16": ("x86_64", "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16"),
    "x86-avx512": ("x86_64", "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512cd avx512_vnni"),
    "x86-avx2": ("x86_64", "flags\t\t: fpu sse4_2 avx avx2 fma"),
    "aarch64-bf16": ("aarch64", "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                                "cpuid asimdrdm lrcpc dcpop asimddp sve i8mm bf16"),
    "aarch64": ("aarch64", "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
}
NATIVE_BF16_KINDS = {"x86-amx", "x86-avx512-bf16", "aarch64-bf16"}
