"""Send throughput and memory: `newsletter send` to N subscribers through the fake SendGrid
server running as a separate process on 127.0.0.1.

    python benchmarks/send_throughput.py                  # 100,000 recipients, median of 3
    python benchmarks/send_throughput.py --count 1000000  # one size
    python benchmarks/send_throughput.py --curve          # 100k, 250k, 500k, 1M: memory curve
    python benchmarks/send_throughput.py --bare           # the floor: a bare client posting
                                                          # pre-encoded 1000-recipient payloads
    python benchmarks/send_throughput.py --smtp           # SMTP to a local aiosmtpd sink,
                                                          # 4 connections, messages/s
    python benchmarks/send_throughput.py --runs 1         # one run per figure instead of 3
    python benchmarks/send_throughput.py --versus-bare --runs 5   # send and bare interleaved:
                                                          # medians and their ratio (issue 27)
    python benchmarks/send_throughput.py --versus-bare --baseline /tmp/base  # and another
                                                          # checkout's send in the same runs

Prints, per run: recipients, wall time of the whole `newsletter send --yes` process (start-up,
check, render, streaming, HTTP, ledger), recipients/s, CPU seconds (with its worker processes)
and the largest peak RSS of any one of those processes (wait4). After the timed runs, one more
run samples the peak PSS of all of them together (shared pages counted once) -- the memory the
send really takes. It is not timed: reading /proc/PID/smaps_rollup every 20 ms walks the
processes' page tables under their memory lock and slowed the send by 0.5-0.7 s.
Also the fake server's CPU seconds: it shares the two cores, and its time for the same work
shows how fast the machine is at that moment.
Targets (issue 9): >= 30,000 recipients/s for 100,000 recipients, peak RSS <= 120 MB, flat to
1 M; SMTP >= 1,000 messages/s with 4 connections. Each figure is the median of `--runs` runs.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from archive_serve import cpu_seconds  # noqa: E402

from tests.conftest import CONFIG, EXAMPLE_ISSUE  # noqa: E402

KEY = "SG.benchmark-key"


def make_project(root: Path, count: int) -> str:
    from sqlalchemy import insert

    from newsletter.store.engine import dispose_all, open_engine
    from newsletter.store.schema import subscribers

    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(CONFIG, "utf-8")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    url = f"sqlite:///{root / 'newsletter.db'}"
    engine = open_engine(url)
    stamp = datetime.now(UTC)
    chunk = 10000
    with engine.begin() as conn:
        for start in range(0, count, chunk):
            conn.execute(
                insert(subscribers),
                [
                    {
                        "email": f"leser{i}@example.org",
                        "email_key": f"leser{i}@example.org",
                        "name": f"Leser Nummer {i}",
                        "first_name": "Jörg" if i % 2 else '<b>Tom & "Jerry"</b>',
                        "last_name": "Müller",
                        "status": "subscribed",
                        "fields": {},
                        "source": "benchmark",
                        "created_at": stamp,
                        "updated_at": stamp,
                    }
                    for i in range(start, min(start + chunk, count))
                ],
            )
    dispose_all()
    return url


def start_server(log: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sendgrid_server", "--port", "0", "--log", str(log),
         "--key", KEY, "--count-only"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()  # type: ignore[union-attr]
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return pids


class MemorySampler(threading.Thread):
    """Peak PSS (proportional set size: shared pages counted once) of the send process and
    its worker processes together, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(self.pid)))


def count_logged(log: Path) -> tuple[int, int]:
    """(recipients, requests) the server accepted; it fails if any address came twice."""
    people = requests = 0
    with open(log, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            assert entry["repeated"] == 0, f"sent twice: {entry}"
            requests += 1
            people += entry["recipients"]
    return people, requests


def run(count: int, sample_memory: bool = False, checkout: Path = REPO) -> dict[str, float]:
    """One whole `newsletter send --yes` of `count` recipients, of the package in `checkout`
    (another one, say main's, to compare side by side); the fake server is always this one."""
    tmp = Path(tempfile.mkdtemp(prefix="send-bench-"))
    try:
        t = time.perf_counter()
        url = make_project(tmp / "project", count)
        insert_s = time.perf_counter() - t
        log = tmp / "sendgrid.log"
        server, host = start_server(log)
        env = {
            **os.environ,
            "SENDGRID_API_KEY": KEY,
            "SENDGRID_API_HOST": host,
            "NEWSLETTER_SECRET_KEY": "benchmark-secret",
            "NEWSLETTER_DATABASE_URL": url,
            "PYTHONPATH": str(checkout),
        }
        try:
            t = time.perf_counter()
            child = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "--project", str(tmp / "project"), "send",
                 EXAMPLE_ISSUE.stem, "--yes", "--quiet"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                cwd=tmp,  # (not a checkout: `-m newsletter` would import from the folder)
            )  # fmt: skip
            sampler = MemorySampler(child.pid)
            if sample_memory:
                sampler.start()
            output = child.stdout.read()  # type: ignore[union-attr]
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - t
            sampler.done.set()
            server_cpu = cpu_seconds(server.pid)  # the same work: a gauge of the machine
        finally:
            server.terminate()
            server.wait()
        if status != 0:
            raise SystemExit(f"send failed:\n{output}")
        people, requests = count_logged(log)
        assert people == count, (people, count)
        return {
            "recipients": count,
            "requests": requests,
            "insert_s": insert_s,
            "seconds": seconds,
            "per_second": count / seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_pss_mb": sampler.peak_kb / 1024,
            "server_cpu_s": server_cpu,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bare(count: int, concurrency: int = 4) -> dict[str, float]:
    """The floor: 1000-recipient requests, encoded before the clock starts by the transport's own
    writer (`mail_json`) from readers shaped as a real send's (name, four substitutions, an
    unsubscribe URL, three ids), posted by `concurrency` threads through the transport's own
    HTTP call. Only HTTP and the server's work are timed."""
    from concurrent.futures import ThreadPoolExecutor

    from newsletter.sending.message import Batch, Message, Recipient
    from newsletter.sending.transports.sendgrid import SendGridTransport
    from newsletter.sending.transports.sendgrid.body import mail_json

    log = Path(tempfile.mkdtemp(prefix="send-bare-")) / "sendgrid.log"
    server, host = start_server(log)
    try:
        page = (EXAMPLE_ISSUE.read_text("utf-8") * 3)[:30000]
        message = Message(
            from_email="jens@example.com", from_name="Jens", subject="Bench", html=page, text=page
        )
        bodies = []
        for start in range(0, count, 1000):
            people = []
            for i in range(start, min(start + 1000, count)):
                url = f"https://news.example.com/unsubscribe/WzEsM{i}.t7AA4rRDlDHfDcpQts2wehlJK9E"
                people.append(
                    Recipient(
                        f"leser{i}@example.org",
                        name=f"Leser Nummer {i}",
                        substitutions={
                            "%%nl:h:0%%": "Jörg",
                            "%%nl:t:0%%": "Jörg",
                            "%%nl:h:unsubscribe%%": url,
                            "%%nl:t:unsubscribe%%": url,
                        },
                        unsubscribe_url=url,
                        ids={
                            "newsletter_issue_id": "1",
                            "newsletter_subscriber_id": str(i),
                            "newsletter_send_id": "1",
                        },
                    )
                )
            bodies.append(mail_json(Batch(message, people)))
        transport = SendGridTransport(KEY, host, backoff=0.01)
        t = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            outcomes = list(pool.map(transport.post_mail, bodies))
        seconds = time.perf_counter() - t
        assert all(o.state == "accepted" for o in outcomes)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(log.parent, ignore_errors=True)
    return {"recipients": count, "seconds": seconds, "per_second": count / seconds}


def smtp(count: int) -> dict[str, float]:
    """`newsletter send` over SMTP (4 connections) to a local aiosmtpd sink in its own process."""
    tmp = Path(tempfile.mkdtemp(prefix="send-smtp-"))
    try:
        url = make_project(tmp / "project", count)
        sink = subprocess.Popen(
            [sys.executable, "-m", "tests.smtp_server", "--port", "0", "--count-only"],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        port = int(sink.stdout.readline().split()[1])  # type: ignore[union-attr]
        config = tmp / "project" / "newsletter.toml"
        config.write_text(
            config.read_text("utf-8")
            + '\n[sending]\ntransport = "smtp"\nconcurrency = 4\n'
            + f'\n[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            + "max_per_connection = 100000\n",
            "utf-8",
        )
        env = {
            **os.environ,
            "NEWSLETTER_SECRET_KEY": "benchmark-secret",
            "NEWSLETTER_DATABASE_URL": url,
        }
        try:
            t = time.perf_counter()
            child = subprocess.run(
                [sys.executable, "-m", "newsletter", "--project", str(tmp / "project"), "send",
                 EXAMPLE_ISSUE.stem, "--yes", "--quiet"],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            seconds = time.perf_counter() - t
        finally:
            sink.terminate()
            received = sink.communicate(timeout=30)[0]
        if child.returncode != 0:
            raise SystemExit(f"send failed:\n{child.stdout}{child.stderr}")
        got = int(received.split("COUNT")[-1].split()[0])
        assert got == count, (got, count)
        return {"recipients": count, "seconds": seconds, "per_second": count / seconds}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smtp_floor(count: int, connections: int = 4) -> dict[str, float]:
    """The sink's own ceiling: pre-built messages (one issue copy, 8bit as the transport sends
    them) through `connections` plain smtplib connections, nothing else."""
    import smtplib

    from newsletter.sending.message import Message, Recipient
    from newsletter.sending.mime import copy_for

    sink = subprocess.Popen(
        [sys.executable, "-m", "tests.smtp_server", "--port", "0", "--count-only"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    port = int(sink.stdout.readline().split()[1])  # type: ignore[union-attr]
    page = (EXAMPLE_ISSUE.read_text("utf-8") * 3)[:25000]
    message = Message(
        from_email="jens@example.com", from_name="Jens", subject="Bench", html=page, text=page
    )
    data = copy_for(message, Recipient("leser@example.org"), eight_bit=True)[0]

    def work(n: int) -> None:
        conn = smtplib.SMTP("127.0.0.1", port)
        for _ in range(n):
            conn.sendmail("jens@example.com", ["leser@example.org"], data, ["BODY=8BITMIME"])
        conn.quit()

    threads = [
        threading.Thread(target=work, args=(count // connections,)) for _ in range(connections)
    ]
    t = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t
    sink.terminate()
    sink.communicate(timeout=30)
    sent = count // connections * connections
    return {"recipients": sent, "seconds": seconds, "per_second": sent / seconds}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    ordered = sorted(runs, key=lambda r: r["per_second"])
    return ordered[len(ordered) // 2]


def versus_bare(count: int, runs: int, baseline: Path | None = None) -> None:
    """`newsletter send` against the bare client's ceiling, measured in the same runs: each
    run is one send and one bare post of `count` recipients (and with `baseline`, a send by
    that checkout), in an order that rotates from run to run.
    Target (issue 27): the ratio of the medians >= 0.40, median of 5."""
    sends: list[float] = []
    floors: list[float] = []
    bases: list[float] = []
    cpu: dict[str, list[float]] = {"send": [], "baseline": []}
    server: dict[str, list[float]] = {"send": [], "baseline": []}
    loads: list[str] = []
    steps = ["send", "bare"] + (["baseline"] if baseline else [])
    for n in range(runs):
        loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
        for step in steps[n % len(steps) :] + steps[: n % len(steps)]:
            if step == "bare":
                floors.append(bare(count)["per_second"])
                continue
            figures = run(count, checkout=baseline if step == "baseline" and baseline else REPO)
            (sends if step == "send" else bases).append(figures["per_second"])
            cpu[step].append(figures["cpu_s"])
            server[step].append(figures["server_cpu_s"])
        print(
            f"run {n + 1}: send {sends[-1]:,.0f}/s ({cpu['send'][-1]:.2f} CPU s, server "
            f"{server['send'][-1]:.2f}), bare client {floors[-1]:,.0f}/s, "
            f"ratio {sends[-1] / floors[-1]:.2f}"
            + (
                f"; baseline {bases[-1]:,.0f}/s ({cpu['baseline'][-1]:.2f} CPU s), "
                f"ratio {bases[-1] / floors[-1]:.2f}"
                if bases
                else ""
            )
            + f"; load {loads[-1]}",
            flush=True,
        )
    send_median, floor_median = statistics.median(sends), statistics.median(floors)
    print(
        f"medians of {runs}: send {send_median:,.0f} recipients/s (min {min(sends):,.0f}); "
        f"floor (bare client posting pre-encoded payloads) {floor_median:,.0f}/s; "
        f"ratio {send_median / floor_median:.2f} (target >= 0.40)"
    )
    if bases:
        base_median = statistics.median(bases)
        print(
            f"baseline {baseline}: {base_median:,.0f} recipients/s (min {min(bases):,.0f}), "
            f"ratio {base_median / floor_median:.2f}; CPU s (send and its workers) median "
            f"{statistics.median(cpu['send']):.2f} here, {statistics.median(cpu['baseline']):.2f} "
            "there"
        )


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--curve", action="store_true", help="100k, 250k, 500k and 1M")
    parser.add_argument("--bare", action="store_true", help="the bare-client floor")
    parser.add_argument("--smtp", action="store_true", help="SMTP to a local aiosmtpd sink")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median)")
    parser.add_argument(
        "--versus-bare",
        action="store_true",
        help="send and the bare client alternately, --runs pairs: medians and their ratio",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="with --versus-bare: another checkout (e.g. `git archive main | tar -x -C DIR`) "
        "whose send is timed in the same runs",
    )
    args = parser.parse_args()
    if args.versus_bare:
        if args.baseline:
            compileall.compile_dir(args.baseline / "newsletter", quiet=1)
        versus_bare(args.count or 100_000, args.runs, args.baseline)
        return
    if args.bare or args.smtp:
        figures = (
            [("bare client", bare)]
            if args.bare
            else [("smtp floor", smtp_floor), ("smtp send", smtp)]
        )
        count = args.count or (100_000 if args.bare else 10_000)
        for what, fn in figures:
            runs = []
            for _ in range(args.runs):
                runs.append(fn(count))
                print(f"{what}: {count:,} in {runs[-1]['seconds']:.2f} s = "
                      f"{runs[-1]['per_second']:,.0f}/s", flush=True)  # fmt: skip
            print(f"{what} median: {median_of(runs)['per_second']:,.0f}/s", flush=True)
        return
    counts = [100_000, 250_000, 500_000, 1_000_000] if args.curve else [args.count or 100_000]
    print(
        f"{'recipients':>10} {'requests':>8} {'send s':>7} {'recipients/s':>12} {'CPU s':>6} "
        f"{'max RSS MB':>10} {'peak PSS MB (all procs)':>23} {'server CPU s':>12}"
    )
    for n in counts:
        runs = []
        for _ in range(args.runs if not args.curve or n <= 100_000 else 1):
            r = run(n)
            runs.append(r)
            print(
                f"{r['recipients']:>10,} {r['requests']:>8} {r['seconds']:>7.2f} "
                f"{r['per_second']:>12,.0f} {r['cpu_s']:>6.2f} {r['peak_rss_mb']:>10.1f} "
                f"{'-':>23} {r['server_cpu_s']:>12.2f}",
                flush=True,
            )
        if len(runs) > 1:
            m = median_of(runs)
            print(f"{'median':>10} {'':>8} {m['seconds']:>7.2f} {m['per_second']:>12,.0f}")
        r = run(n, sample_memory=True)
        print(
            f"{'memory':>10} {'(untimed)':>8} {'':>7} {'':>12} {r['cpu_s']:>6.2f} "
            f"{r['peak_rss_mb']:>10.1f} {r['peak_pss_mb']:>23.1f} {r['server_cpu_s']:>12.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
