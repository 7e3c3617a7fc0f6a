#!/usr/bin/env bash
# summary.sh - add up the test results of one or more meson build dirs.
#
# usage: scripts/summary.sh [BUILDDIR | TESTLOG.json | --check NAME=RC]...
#
# For each BUILDDIR, reads BUILDDIR/meson-logs/testlog.json (or the given
# testlog*.json), one JSON object per test binary, output in "stdout" and
# "stderr" (older meson: "stdo", "stde"). A binary built on
# tests/harness.h prints TAP and a last line "# N passed, N failed, N
# skipped"; those lines are summed. A binary that printed no such line (a
# crash, a timeout, a non-TAP test such as a compile check) counts as one
# test: passed if meson says OK/EXPECTEDFAIL, skipped if SKIP, else failed.
# A binary meson calls failed whose own line shows no failure (it failed
# after its summary: a leak gate, LeakSanitizer at exit) counts one failed.
# A BUILDDIR with no test log counts one failed (build or meson test broke).
# "--check NAME=RC" adds a one-test result: RC 0 passed, else failed.
#
# Prints the failures by name (with their TAP "not ok" lines, which meson
# does not show), "[label] N passed, N failed, N skipped" per argument, and
# last "TOTAL: N passed, N failed, N skipped". Exits 1 when anything failed
# or nothing ran.
set -euo pipefail
exec python3 - "$@" <<'PY'
import json, os, re, sys

LINE = re.compile(r'^#\s*(\d+) passed, (\d+) failed, (\d+) skipped\s*$', re.M)
NOTOK = re.compile(r'^not ok .*$', re.M)
GOOD = {'OK', 'EXPECTEDFAIL'}

def from_log(path):
    """(passed, failed, skipped, [failed binaries]) for one testlog.json."""
    p = f = s = 0
    bad = []
    with open(path, encoding='utf-8', errors='replace') as fh:
        for raw in fh:
            raw = raw.strip()
            if not raw:
                continue
            try:
                t = json.loads(raw)
            except ValueError:
                f += 1
                bad.append('(unreadable line in %s)' % path)
                continue
            res = t.get('result', '?')
            out = (t.get('stdout') or t.get('stdo') or '') + '\n' + \
                  (t.get('stderr') or t.get('stde') or '')
            m = LINE.findall(out)
            if m:
                tp, tf, ts = (int(x) for x in m[-1])
                if res not in GOOD and res != 'SKIP' and tf == 0:
                    tf = 1
                p, f, s = p + tp, f + tf, s + ts
                if tf:
                    bad.append('%s (%s, %d failed)' % (t.get('name'), res, tf))
                    bad += ['    ' + l for l in NOTOK.findall(out)]
            elif res in GOOD:
                p += 1
            elif res == 'SKIP':
                s += 1
            else:
                f += 1
                bad.append('%s (%s, exit %s)' % (t.get('name'), res,
                                                 t.get('returncode')))
                bad += ['    ' + l for l in NOTOK.findall(out)]
    return p, f, s, bad

rows = []
args = sys.argv[1:]
i = 0
while i < len(args):
    a = args[i]
    i += 1
    if a == '--check':
        if i >= len(args) or '=' not in args[i]:
            sys.exit('summary: --check needs NAME=RC')
        name, rc = args[i].rsplit('=', 1)
        i += 1
        ok = rc.strip() == '0'
        rows.append((name, 1 if ok else 0, 0 if ok else 1, 0,
                     [] if ok else ['%s (exit %s)' % (name, rc)]))
        continue
    if a.endswith('.json'):
        path = a
        d = os.path.dirname(os.path.dirname(os.path.abspath(a)))
        label = os.path.basename(d)
        base = os.path.basename(a)[len('testlog'):-len('.json')]
        label += base.replace('-', ':', 1) if base.startswith('-') else ''
    else:
        path = os.path.join(a, 'meson-logs', 'testlog.json')
        label = os.path.basename(os.path.normpath(a))
    if os.path.isfile(path):
        rows.append((label,) + from_log(path))
    else:
        rows.append((label, 0, 1, 0, ['no test log %s: the build or '
                                      'meson test did not run' % path]))

P = F = S = 0
for label, p, f, s, bad in rows:
    for b in bad:
        print(b if b.startswith(' ') else '[%s] FAILED: %s' % (label, b))
for label, p, f, s, bad in rows:
    print('[%s] %d passed, %d failed, %d skipped' % (label, p, f, s))
    P, F, S = P + p, F + f, S + s
print('TOTAL: %d passed, %d failed, %d skipped' % (P, F, S))
sys.exit(1 if F or P + S == 0 else 0)
PY
