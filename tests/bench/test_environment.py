"""The recorded environment: the host CPU read from /proc/cpuinfo text."""

from zoo.bench.environment import environment, host_cpu
from zoo.bench.report import host_cpu_text

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw

processor\t: 1
model name\t: something else
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32
CPU implementer\t: 0x41
"""


def test_x86_name_gets_family_and_model_and_the_widest_vector_extension():
    cpu = host_cpu(X86)
    assert cpu["host_cpu"] == "AMD EPYC (family 25, model 17)"
    assert cpu["host_cpu_vector"] == "avx512f"
    assert cpu["host_cpu_cores"] >= 1


def test_avx2_only_and_arm_and_missing_cpuinfo():
    assert host_cpu(X86.replace(" avx512f avx512bw", ""))["host_cpu_vector"] == "avx2"
    assert host_cpu(ARM)["host_cpu_vector"] == "asimd"
    unknown = host_cpu("")
    assert unknown["host_cpu_vector"] is None and unknown["host_cpu"]  # a name from `platform`


def test_environment_records_the_host_cpu_and_the_report_names_it():
    env = environment()
    assert {"host_cpu", "host_cpu_vector", "host_cpu_cores"} <= set(env)
    text = host_cpu_text(env)
    assert env["host_cpu"] in text and f"{env['host_cpu_cores']} cores" in text
    assert host_cpu_text({"host_cpu": None}) == "-"
