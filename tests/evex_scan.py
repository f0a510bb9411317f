"""Find AVX-512 (EVEX-encoded) instructions in a disassembly, by function.

Registers and forms only EVEX can encode: zmm registers, xmm/ymm 16-31, the opmask registers
k0-k7 (as operands, `{%k1}` masking, `{z}` zeroing), embedded broadcast (`{1to8}`) and rounding
(`{rn-sae}`, `{sae}`), objdump's `{evex}` prefix; and mnemonics that exist only as EVEX (opmask
instructions, vpopcnt*, vpternlog*, vpermt2*, compress/expand, down-converting moves, ...), which
catches AVX-512VL code that uses only xmm/ymm 0-15 without masks. Used by tests/test_embedded.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

EVEX_OPERAND = re.compile(
    r"%(?:zmm\d+|[xy]mm(?:1[6-9]|2\d|3[01])|k[0-7])\b"
    r"|\{%k[0-7]\}|\{z\}|\{1to\d+\}|\{(?:rn|rd|ru|rz)-sae\}|\{sae\}|\{evex\}"
)
EVEX_MNEMONIC = re.compile(
    r"k(?:mov|and|andn|or|xor|xnor|not|shiftl|shiftr|unpck|test|ortest|add)[bwdq]?"
    r"|vpopcnt[bwdq]|vpternlog[dq]|vperm[it]2\w+|vpermb|vpermw|vp?compress\w*|vp?expand\w*"
    r"|vpmov(?:q[bwd]|d[bw]|wb|u?s(?:q[bwd]|d[bw]|wb)|m2[bwdq]|[bwdq]2m)|valign[dq]|vp?blendm\w+"
    r"|vpcmpu?[bwdq]|vpconflict[dq]|vplzcnt[dq]|vrcp(?:14|28)\w+|vrsqrt(?:14|28)\w+|vexp2\w+"
    r"|vgetexp\w+|vgetmant\w+|vrndscale\w+|vscalef\w+|vfixupimm\w+|vrange\w+|vreduce\w+|vfpclass\w+"
    r"|vdbpsadbw|vpmultishiftqb|vpshl?dv?[wdq]|vpshrdv?[wdq]|vps(?:ra|rl|ll)vw|vpsraq|vpro[lr]v?[dq]"
    r"|vpbroadcastm\w+|vptestn?m[bwdq]|vp?scatter\w+|v(?:gather|scatter)pf\w+|vpshufbitqmb"
    r"|v4f\w+|vp4dpwssds?|vp2intersect[dq]|vdpbf16ps|vcvtne2ps2bf16"
    r"|v(?:broadcast|extract|insert)[fi](?:32x[248]|64x[24])|vshuf[fi](?:32x4|64x2)"
    r"|vcvtt?(?:pd|ps|sd|ss)2u(?:dq|qq|si)|vcvtt?(?:pd|ps)2qq|vcvtu?(?:qq|udq|uqq)2\w+|vcvtusi2s[ds]"
    r"|vmovdq[au](?:8|16|32|64)|vp(?:abs|maxs|maxu|mins|minu|mull)q"
    r"|v(?!cvtph2ps$|cvtps2ph$)\w+ph"  # AVX512-FP16 packed half precision (F16C's two are VEX)
)
_HEADER = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_INSTRUCTION = re.compile(r"^\s*[0-9a-f]+:\s+(.*)$")


def evex_by_function(listing: str) -> dict[str, str]:
    """{function: its first EVEX instruction} for an `objdump -d --no-show-raw-insn` listing."""
    found: dict[str, str] = {}
    function = None
    for line in listing.splitlines():
        header = _HEADER.match(line)
        if header:
            function = header.group(1)
            continue
        insn = _INSTRUCTION.match(line)
        if not insn or function is None or function in found:
            continue
        text = insn.group(1).strip()
        words = [w for w in text.split() if not w.startswith("{")]
        mnemonic = words[0] if words else ""
        if EVEX_OPERAND.search(text) or EVEX_MNEMONIC.fullmatch(mnemonic):
            found[function] = text
    return found


def disassemble(path: Path) -> str:
    objdump = shutil.which("objdump")
    if objdump is None:
        raise FileNotFoundError("objdump")
    return subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                          check=True).stdout
