#!/usr/bin/env python3
"""fdr's web UI in a real browser: Debian's Chromium driven by Playwright.

Run by tests/tests/ui.rs (`cargo xtask test`) against a real fdr-console
that copied a real incident from a real agent, and against the file that
`fdrctl report` wrote for the same incident. Every check follows
/work/wt/UI-CONTRACT.md (the class names and the JSON shapes); each failure
exits non-zero with a message that says what was expected and what was seen.

Never downloads a browser: Chromium is launched from /usr/bin/chromium
(Debian's package, `cargo xtask setup` installs it).

Also a benchmark mode (`--bench-loads N`): the time from navigation to the
first page of timeline rows drawn, over N loads, printed as JSON.
"""

import argparse
import csv
import io
import json
import os
import re
import socket
import ssl
import sys
import time
import urllib.parse
import zipfile

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: a 2-core machine shared with builds.
TIMEOUT_MS = 60_000


class Failed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def step(msg):
    print(f"ui: {msg}", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="the console's web UI, e.g. https://127.0.0.1:8443")
    p.add_argument("--token", help="an admin token")
    p.add_argument("--viewer-token", help="a viewer token (optional)")
    p.add_argument("--ca-file", help="CA certificate the console's TLS certificate must chain to")
    p.add_argument("--ignore-https-errors", action="store_true",
                   help="accept any certificate (without --ca-file)")
    p.add_argument("--serial", help="the incident's fleet serial")
    p.add_argument("--snapshot", help="the console's snapshot id of the incident")
    p.add_argument("--sha256", help="the snapshot's SHA-256 (the package manifest must have it)")
    p.add_argument("--node", help="the incident's node name")
    p.add_argument("--user", help="the account the incident is about")
    p.add_argument("--type", default="backdoor-account", help="the incident's type")
    p.add_argument("--marker", help="text in the marker command's argv")
    p.add_argument("--marker-rows", type=int,
                   help="rows of the snapshot whose text holds the marker (from the CSV)")
    p.add_argument("--expected-csv", help="`fdrctl snapshot export --format csv` of the snapshot")
    p.add_argument("--report", help="the file `fdrctl report` wrote for the incident")
    p.add_argument("--screenshots", help="directory for the screenshots")
    p.add_argument("--bench-loads", type=int, default=0,
                   help="benchmark: navigations to time (prints JSON; no checks)")
    p.add_argument("--bench-page", help="benchmark: the console page (path) holding the timeline")
    return p.parse_args(argv)


# ---------------------------------------------------------------- helpers


def launch(pw):
    check(os.path.exists(CHROMIUM),
          f"{CHROMIUM} missing: install Debian's chromium (`cargo xtask setup` does)")
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def check_certificate(url, ca_file):
    """The console's certificate chains to `ca_file` and names the host (the
    browser itself is told to ignore HTTPS errors: Chromium has no per-run CA)."""
    u = urllib.parse.urlsplit(url)
    check(u.scheme == "https", f"the web UI is not served over HTTPS: {url}")
    ctx = ssl.create_default_context(cafile=ca_file)
    port = u.port or 443
    try:
        with socket.create_connection((u.hostname, port), timeout=30) as s:
            with ctx.wrap_socket(s, server_hostname=u.hostname) as t:
                check(t.version() in ("TLSv1.2", "TLSv1.3"), f"TLS version {t.version()}")
    except ssl.SSLError as e:
        raise Failed(f"the console's certificate does not verify with {ca_file}: {e}")


def section_state(page, sel="section.timeline"):
    return page.eval_on_selector(
        sel, "s => ({state: s.dataset.state, rendered: Number(s.dataset.rendered || 0)})")


def wait_ready(page, sel="section.timeline", after=-1, what="the timeline"):
    """Waits until the timeline drew a result newer than `after` (its
    data-rendered counter) and is ready; fails on data-state=error."""
    try:
        page.wait_for_function(
            """([sel, after]) => {
                const s = document.querySelector(sel);
                if (!s) return false;
                if (s.dataset.state === 'error') return true;
                return s.dataset.state === 'ready' && Number(s.dataset.rendered || 0) > after;
            }""",
            arg=[sel, after], timeout=TIMEOUT_MS)
    except Exception as e:  # noqa: BLE001 - Playwright's TimeoutError
        st = page.eval_on_selector(sel, "s => s.outerHTML.slice(0, 600)") \
            if page.query_selector(sel) else "no section.timeline"
        raise Failed(f"{what}: no new drawing (data-rendered > {after}, data-state=ready): {e}\n{st}")
    st = section_state(page, sel)
    if st["state"] == "error":
        err = page.text_content(f"{sel} .tl-error") if page.query_selector(f"{sel} .tl-error") else ""
        raise Failed(f"{what}: data-state=error: {err!r}")
    return st["rendered"]


def act_and_wait(page, action, what, sel="section.timeline"):
    """Does `action` and waits for the drawing of its query."""
    before = section_state(page, sel)["rendered"]
    action()
    return wait_ready(page, sel, before, what)


def rows(page, sel="section.timeline"):
    """The grid's rows: kind and each cell's text."""
    return page.eval_on_selector_all(
        f"{sel} table.tl-grid tbody tr.tl-row",
        """rs => rs.map(r => ({kind: r.dataset.kind, i: r.dataset.i,
                              cells: Array.from(r.cells).map(c => c.textContent)}))""")


def bars(page, sel="section.timeline"):
    return page.eval_on_selector_all(
        f"{sel} svg.tl-histogram rect.tl-bar",
        "bs => bs.map(b => ({kind: b.getAttribute('data-kind'), count: b.getAttribute('data-count')}))")


def status_text(page, sel="section.timeline"):
    el = page.query_selector(f"{sel} .tl-status")
    return el.text_content().strip() if el else "(no .tl-status)"


def grid_columns(page, sel="section.timeline"):
    return page.eval_on_selector_all(
        f"{sel} table.tl-grid thead th", "ths => ths.map(t => t.textContent.trim())")


WHAT_COLUMN = "Command or path"


def check_timeline(page, args, where, sel="section.timeline"):
    """Kind toggles and search, the same on the console and in the report."""
    wait_ready(page, sel, -1, f"{where}: the first page")
    cols = grid_columns(page, sel)
    want_cols = ["Time (UTC)", "Kind", "User", "PID", WHAT_COLUMN, "Port or address", "Message"]
    check(cols == want_cols, f"{where}: grid columns {cols}, want {want_cols}")
    first = rows(page, sel)
    check(first, f"{where}: the first page has no rows ({status_text(page, sel)})")
    kinds = page.eval_on_selector_all(f"{sel} .tl-kinds label.tl-kind",
                                      "ls => ls.map(l => l.dataset.kind)")
    check("exec" in kinds, f"{where}: no exec toggle among {kinds}")
    check(len(kinds) > 1, f"{where}: a single kind ({kinds}): the toggle test needs several")

    # Every kind off, then exec on: only exec rows and exec bars.
    act_and_wait(page, lambda: page.click(f"{sel} button.tl-none"), f"{where}: none")
    none_rows = rows(page, sel)
    check(not none_rows, f"{where}: rows left with every kind off: {none_rows[:3]}")
    check(not bars(page, sel), f"{where}: histogram bars left with every kind off")
    act_and_wait(page, lambda: page.check(f"{sel} label.tl-kind[data-kind=exec] input"),
                 f"{where}: exec on")
    r = rows(page, sel)
    b = bars(page, sel)
    check(r, f"{where}: no rows with exec on ({status_text(page, sel)})")
    check(b, f"{where}: no histogram bars with exec on")
    other = [x for x in r if x["kind"] != "exec"]
    check(not other, f"{where}: non-exec rows with only exec on: {other[:3]}")
    other = [x for x in b if x["kind"] != "exec"]
    check(not other, f"{where}: non-exec histogram bars with only exec on: {other[:3]}")
    kind_col = want_cols.index("Kind")
    shown = {x["cells"][kind_col].strip() for x in r}
    check(shown == {"exec"}, f"{where}: the Kind column shows {shown}")
    step(f"{where}: exec only: {len(r)} rows, {len(b)} bars, all exec")

    # Every kind on again, then the marker searched.
    act_and_wait(page, lambda: page.click(f"{sel} button.tl-all"), f"{where}: all")
    check(len(rows(page, sel)) >= len(r), f"{where}: fewer rows with every kind than exec only")

    def search():
        page.fill(f"{sel} input.tl-search", args.marker)
        page.press(f"{sel} input.tl-search", "Enter")

    act_and_wait(page, search, f"{where}: search")
    # The debounced query of the same text may draw once more: same result.
    found = rows(page, sel)
    what = want_cols.index(WHAT_COLUMN)
    texts = [x["cells"][what] for x in found]
    check(len(found) == args.marker_rows,
          f"{where}: searching {args.marker!r} shows {len(found)} rows, the CSV has "
          f"{args.marker_rows}: {texts} ({status_text(page, sel)})")
    missing = [t for t in texts if args.marker.lower() not in t.lower()]
    check(not missing, f"{where}: rows found whose command lacks the marker: {missing}")
    nxt = page.query_selector(f"{sel} button.tl-next")
    check(nxt is not None and nxt.is_disabled(), f"{where}: a next page after {len(found)} rows")
    step(f"{where}: search {args.marker!r}: {len(found)} rows, as in the CSV")
    # The filters are in the URL's fragment: a reload (or the link in a
    # ticket) shows the same rows.
    frag = page.evaluate("() => location.hash")
    check("q=" in frag, f"{where}: the search is not in the URL's fragment: {frag!r}")
    if where == "console":
        page.reload()
        wait_ready(page, sel, -1, f"{where}: the reloaded page")
        kept = page.input_value(f"{sel} input.tl-search")
        check(kept == args.marker, f"{where}: after a reload the search box holds {kept!r}")
        again = rows(page, sel)
        check(len(again) == args.marker_rows,
              f"{where}: after a reload {len(again)} rows, before {args.marker_rows}")
        step(f"{where}: the filtered view survives a reload ({frag})")
    # Back to everything for the screenshots and the keyboard.
    act_and_wait(page, lambda: page.fill(f"{sel} input.tl-search", ""), f"{where}: search cleared")


def check_keyboard(page, where, sel="section.timeline"):
    """Tab reaches the kind toggles and a grid row; Enter on a row fills the detail."""
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.focus("body")
    reached_toggle = reached_row = False
    for _ in range(400):
        page.keyboard.press("Tab")
        at = page.evaluate(
            """() => { const a = document.activeElement; if (!a) return '';
                       if (a.closest('label.tl-kind')) return 'toggle';
                       if (a.matches('tr.tl-row')) return 'row';
                       return a.tagName; }""")
        reached_toggle |= at == "toggle"
        if at == "row":
            reached_row = True
            break
    check(reached_toggle, f"{where}: Tab never reached a kind toggle")
    check(reached_row, f"{where}: Tab never reached a grid row")
    page.keyboard.press("Enter")
    try:
        page.wait_for_function(
            """sel => { const d = document.querySelector(sel + ' .tl-detail');
                        return d && d.querySelectorAll('dl.tl-fields dt').length > 0; }""",
            arg=sel, timeout=TIMEOUT_MS)
    except Exception as e:  # noqa: BLE001
        raise Failed(f"{where}: Enter on a row did not fill .tl-detail: {e}")
    selected = page.eval_on_selector_all(f"{sel} tr.tl-row.selected", "rs => rs.length")
    check(selected == 1, f"{where}: {selected} rows selected after Enter")
    step(f"{where}: keyboard: Tab reaches the toggles and a row; Enter shows its detail")


def no_horizontal_overflow(page, where):
    w = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    check(w[0] <= w[1], f"{where}: the page overflows horizontally ({w[0]} px in {w[1]} px)")


def login(browser, args, token, who):
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    page = ctx.new_page()
    resp = page.goto(f"{args.url}/incidents")
    check(resp.status == 401, f"/incidents without a session: {resp.status}, want 401")
    check(page.query_selector("form#login") is not None, "no form#login on the 401 page")
    kind = page.get_attribute("form#login input[name=token]", "type")
    check(kind == "password", f"the token field's type is {kind!r}, want password")
    page.fill("form#login input[name=token]", token)
    with page.expect_navigation():
        page.click("form#login [type=submit], form#login button")
    check(urllib.parse.urlsplit(page.url).path == "/incidents",
          f"after logging in as {who}: at {page.url}, want /incidents")
    check(page.query_selector("table.incidents") is not None,
          f"after logging in as {who}: no table.incidents")
    shown = (page.text_content("header.top .who") or "").strip()
    check(shown == who, f"header says {shown!r}, want {who!r}")
    return ctx, page


def csrf_of(page):
    return page.get_attribute("meta[name=csrf-token]", "content")


# ------------------------------------------------------------- the checks


def check_unauthenticated(pw, args):
    ctx = pw.request.new_context(ignore_https_errors=True)
    secrets = [args.marker, args.node, args.user]
    paths = [
        "/incidents",
        f"/incidents/{args.serial}",
        f"/api/timeline/snapshot/{args.snapshot}/query",
        f"/api/timeline/snapshot/{args.snapshot}/event/0",
        f"/snapshots/{args.snapshot}",
        f"/snapshots/{args.snapshot}/package",
    ]
    for headers, how in [({}, "no credentials"),
                         ({"Authorization": "Bearer not-the-token"}, "a wrong token"),
                         ({"Cookie": "fdr_session=forged"}, "a forged session cookie")]:
        for path in paths:
            r = ctx.get(f"{args.url}{path}", headers=headers, max_redirects=0)
            body = r.body()
            check(r.status == 401, f"GET {path} with {how}: {r.status}, want 401")
            leaked = [s for s in secrets if s and s.encode() in body]
            check(not leaked, f"GET {path} with {how}: the 401 body holds {leaked}")
    # The bearer token is accepted instead of a session.
    r = ctx.get(f"{args.url}/incidents",
                headers={"Authorization": f"Bearer {args.token}"}, max_redirects=0)
    check(r.status == 200, f"GET /incidents with the bearer token: {r.status}")
    check(args.node.encode() in r.body(), "GET /incidents with the bearer token: node not listed")
    # A wrong token at the login form: 401, no session.
    r = ctx.post(f"{args.url}/login", form={"token": "wrong", "next": "/incidents"},
                 max_redirects=0)
    check(r.status == 401, f"POST /login with a wrong token: {r.status}, want 401")
    check("fdr_session=" not in r.headers.get("set-cookie", "") or
          "Max-Age=0" in r.headers.get("set-cookie", ""),
          f"a wrong token got a session: {r.headers.get('set-cookie')}")
    ctx.dispose()
    step(f"without credentials: 401 and no data on {len(paths)} paths")


def check_cookie(ctx):
    cookies = [c for c in ctx.cookies() if c["name"] == "fdr_session"]
    check(len(cookies) == 1, f"session cookies after login: {ctx.cookies()}")
    c = cookies[0]
    check(c["httpOnly"], f"fdr_session is not HttpOnly: {c}")
    check(c["secure"], f"fdr_session is not Secure: {c}")
    check(c["sameSite"] == "Strict", f"fdr_session SameSite={c['sameSite']}, want Strict")
    check(c.get("path", "/") == "/", f"fdr_session Path={c.get('path')}, want /")
    step("the session cookie is HttpOnly, Secure, SameSite=Strict")


def check_incident_pages(page, args, shots):
    page.goto(f"{args.url}/incidents")
    row = page.query_selector(f"table.incidents tr.incident[data-serial='{args.serial}']")
    listed = page.eval_on_selector_all("table.incidents tr.incident",
                                       "rs => rs.map(r => r.dataset.serial)")
    check(row is not None, f"incident {args.serial} not listed: serials {listed}")
    check(row.get_attribute("data-type") == args.type,
          f"listed type {row.get_attribute('data-type')!r}, want {args.type!r}")
    check(row.get_attribute("data-node") == args.node,
          f"listed node {row.get_attribute('data-node')!r}, want {args.node!r}")
    link = row.query_selector("a.incident-link")
    check(link is not None, "the incident's row has no a.incident-link")
    with page.expect_navigation():
        link.click()
    check(urllib.parse.urlsplit(page.url).path == f"/incidents/{args.serial}",
          f"the incident link led to {page.url}")
    step(f"incidents page lists {args.serial} ({args.type} on {args.node})")

    def field(sel, name):
        el = page.query_selector(f"{sel} dd[data-field={name}]")
        check(el is not None, f"incident page: no {sel} dd[data-field={name}]")
        return el.text_content().strip()

    check(field("dl.summary", "type") == args.type, f"type shown: {field('dl.summary', 'type')!r}")
    check(field("dl.summary", "node") == args.node, f"node shown: {field('dl.summary', 'node')!r}")
    check(field("dl.summary", "serial") == args.serial,
          f"serial shown: {field('dl.summary', 'serial')!r}")
    sha = field("dl.summary", "sha256")
    check(sha == args.sha256, f"sha256 shown {sha!r}, want {args.sha256}")
    check(page.query_selector("section.account") is not None, "incident page: no section.account")
    # The record: the account made (`account`), who made it (`user`), the
    # files changed, and whether it came from a terminal.
    user = field("section.account", "account")
    check(user == args.user, f"account record: account {user!r}, want {args.user!r}")
    changer = field("section.account", "user")
    check(changer.startswith("root"), f"account record: changed by {changer!r}, want root")
    files = field("section.account", "files")
    check("passwd" in files, f"account record: files {files!r}, want /etc/passwd among them")
    interactive = field("section.account", "interactive")
    check(interactive == "yes", f"account record: interactive {interactive!r}, want yes")
    check(page.query_selector("section.audits table.audits tr.audit") is not None,
          "incident page: no audits (tr.audit)")
    footer = (page.text_content("footer") or "")
    check("UTC" in footer, f"the footer does not state UTC: {footer!r}")
    check(page.query_selector("section.timeline[data-marks]") is not None,
          "incident page: no section.timeline with data-marks")
    step(f"incident page: type, node, serial, sha256, account {user}, audits")


def check_package(page, args):
    link = page.query_selector("a.package")
    check(link is not None, "incident page: no a.package")
    href = link.get_attribute("href")
    check(href == f"/snapshots/{args.snapshot}/package",
          f"a.package href {href!r}, want /snapshots/{args.snapshot}/package")
    with page.expect_download() as dl:
        link.click()
    d = dl.value
    check(d.suggested_filename == f"fdr-snapshot-{args.snapshot}.zip",
          f"package named {d.suggested_filename!r}")
    path = d.path()
    check(path is not None and zipfile.is_zipfile(path), f"the package is not a zip: {d.failure()}")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        for n in ["events.csv", "events.jsonl", "manifest.json"]:
            check(n in names, f"the package lacks {n}: {names}")
        got = z.read("events.csv")
        manifest = json.loads(z.read("manifest.json"))
        jsonl = z.read("events.jsonl").decode().splitlines()
    want = open(args.expected_csv, "rb").read()
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise Failed(f"the package's events.csv differs from `fdrctl snapshot export --format csv` "
                     f"({len(got)} vs {len(want)} bytes; first difference at byte {at}: "
                     f"{got[max(0, at - 60):at + 60]!r} vs {want[max(0, at - 60):at + 60]!r})")
    csv_rows = sum(1 for _ in csv.reader(io.StringIO(want.decode()))) - 1
    check(len(jsonl) == csv_rows, f"events.jsonl has {len(jsonl)} lines, the CSV {csv_rows} rows")
    # The snapshot's facts at the top or under "snapshot".
    snap = manifest.get("snapshot") if isinstance(manifest.get("snapshot"), dict) else manifest
    check(snap.get("sha256") == args.sha256,
          f"manifest sha256 {snap.get('sha256')!r}, want {args.sha256}: {manifest}")
    check(snap.get("node") == args.node, f"manifest node {snap.get('node')!r}: {manifest}")
    for key in ["scope"]:
        check(key in snap, f"manifest without {key}: {manifest}")
    step(f"package: events.csv byte-identical ({len(got)} bytes, {csv_rows} rows), "
         f"manifest sha256 {args.sha256[:12]}…")


def check_csrf(ctx, page, args, who):
    base = args.url
    token = csrf_of(page)
    check(token, f"{who}: no meta csrf-token on a logged-in page")
    for path, form in [("/models/relearn", {"node": args.node, "key": "host"}),
                       ("/snapshots/create", {"node": args.node, "scope": "host"})]:
        if who == "admin":
            r = ctx.request.post(f"{base}{path}", form=form, max_redirects=0)
            check(r.status == 403,
                  f"POST {path} with the admin's session but no CSRF token: {r.status}, want 403")
            r = ctx.request.post(f"{base}{path}", form={**form, "csrf": "0" * len(token)},
                                 max_redirects=0)
            check(r.status == 403, f"POST {path} with a wrong CSRF token: {r.status}, want 403")
            r = ctx.request.post(f"{base}{path}", form=form,
                                 headers={"X-CSRF-Token": "bad"}, max_redirects=0)
            check(r.status == 403, f"POST {path} with a wrong X-CSRF-Token: {r.status}, want 403")
        else:
            r = ctx.request.post(f"{base}{path}", form={**form, "csrf": token}, max_redirects=0)
            check(r.status == 403,
                  f"POST {path} as a viewer with a valid CSRF token: {r.status}, want 403")
            r = ctx.request.post(f"{base}{path}", form=form, headers={"X-CSRF-Token": token},
                                 max_redirects=0)
            check(r.status == 403,
                  f"POST {path} as a viewer with a valid X-CSRF-Token: {r.status}, want 403")
            r = ctx.request.post(f"{base}{path}", form=form, max_redirects=0,
                                 headers={"Authorization": f"Bearer {args.viewer_token}"})
            check(r.status == 403,
                  f"POST {path} with the viewer's bearer token: {r.status}, want 403")
    step(f"{who}: state-changing POSTs refused (403)")


def check_console_timeline(ctx, page, args, shots):
    page.goto(f"{args.url}/incidents/{args.serial}")
    wait_ready(page, what="incident page timeline")
    marked = page.eval_on_selector_all("section.timeline tr.tl-row.marked", "rs => rs.length")
    step(f"incident page: {marked} marked rows on the timeline's first page")
    page.screenshot(path=os.path.join(shots, "incident-1280x800.png"))
    page.screenshot(path=os.path.join(shots, "incident-1280x800-full.png"), full_page=True)
    no_horizontal_overflow(page, "incident page at 1280 px")
    check_timeline(page, args, "console")
    # Only the incident's own events: every row marked.
    act_and_wait(page, lambda: page.check("section.timeline input.tl-marked"), "console: marked")
    m = page.eval_on_selector_all(
        "section.timeline tr.tl-row", "rs => rs.map(r => r.classList.contains('marked'))")
    check(m and all(m), f"console: 'only the incident's events' shows {len(m)} rows, "
                        f"{m.count(False)} unmarked")
    step(f"console: only the incident's events: {len(m)} rows, all marked")
    act_and_wait(page, lambda: page.uncheck("section.timeline input.tl-marked"),
                 "console: marked off")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.eval_on_selector("section.timeline", "s => s.scrollIntoView()")
    page.screenshot(path=os.path.join(shots, "timeline-1280x800.png"))
    check_keyboard(page, "console")
    # The detail panel right of the grid at >= 1000 px.
    g = page.eval_on_selector("section.timeline table.tl-grid", "e => e.getBoundingClientRect().toJSON()")
    d = page.eval_on_selector("section.timeline .tl-detail", "e => e.getBoundingClientRect().toJSON()")
    check(d["left"] > g["left"] + 100 and d["top"] < g["top"] + g["height"],
          f"at 1280 px the detail panel is not beside (right of) the grid: grid {g}, detail {d}")
    page.eval_on_selector("section.timeline table.tl-grid", "g => g.scrollIntoView()")
    page.screenshot(path=os.path.join(shots, "timeline-detail-1280x800.png"))

    narrow = ctx.new_page()
    narrow.set_viewport_size({"width": 420, "height": 800})
    narrow.goto(f"{args.url}/incidents/{args.serial}")
    wait_ready(narrow, what="timeline at 420 px")
    narrow.eval_on_selector("section.timeline", "s => s.scrollIntoView()")
    narrow.screenshot(path=os.path.join(shots, "timeline-420x800.png"))
    narrow.screenshot(path=os.path.join(shots, "incident-420x800-full.png"), full_page=True)
    no_horizontal_overflow(narrow, "incident page at 420 px")
    hidden = narrow.eval_on_selector_all(
        "section.timeline table.tl-grid thead th",
        "ths => ths.filter(t => getComputedStyle(t).display === 'none').map(t => t.textContent.trim())")
    check("PID" in hidden and "Port or address" in hidden,
          f"at 420 px the PID and Port columns are not hidden (hidden: {hidden})")
    narrow.close()
    step("screenshots: incident and timeline at 1280x800, timeline at 420x800")


def check_report(browser, args, shots):
    ctx = browser.new_context(offline=True, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    url = "file://" + os.path.abspath(args.report)
    attempts = []

    def route(r):
        if r.request.url == url:
            r.continue_()
        else:
            attempts.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: attempts.append(r.url) if r.url != url else None)
    page.goto(url)
    check(page.query_selector("section.timeline[data-inline]") is not None,
          "report: no section.timeline with data-inline")
    kind = page.query_selector("dl.summary dd[data-field=type]")
    check(kind is not None and kind.text_content().strip() == args.type,
          f"report: type shown {kind.text_content() if kind else None!r}")
    node = page.query_selector("dl.summary dd[data-field=node]")
    check(node is not None and node.text_content().strip() == args.node,
          f"report: node shown {node.text_content() if node else None!r}")
    check_timeline(page, args, "report")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.eval_on_selector("section.timeline", "s => s.scrollIntoView()")
    page.screenshot(path=os.path.join(shots, "report-timeline-1280x800.png"))
    check(not errors, f"report: script errors: {errors}")
    check(not attempts, f"report: requests beyond the file: {attempts}")
    ctx.close()
    step("report (file://, offline, every request aborted): toggles and search work")


# ------------------------------------------------------------- benchmark


# Before any script of the page: the times (ms since the navigation
# started, the page's own clock) when the first grid row is in the DOM, and
# of the next animation frame (the rows painted: a page busy after drawing
# paints later).
FIRST_ROWS_PROBE = """
window.__fdrFirstRows = null;
window.__fdrFirstFrame = null;
new MutationObserver((_, o) => {
  if (document.querySelector('section.timeline tr.tl-row')) {
    window.__fdrFirstRows = performance.now();
    requestAnimationFrame(() => { window.__fdrFirstFrame = performance.now(); });
    o.disconnect();
  }
}).observe(document, {subtree: true, childList: true});
"""


def time_loads(ctx, url, n):
    """`n` navigations to `url`: seconds until the first rows are seen from
    outside (Playwright), and until they are in the DOM (the page's clock)."""
    ctx.add_init_script(FIRST_ROWS_PROBE)
    wall, dom, frame, status = [], [], [], ""
    for _ in range(n):
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_selector("section.timeline[data-state=ready] tr.tl-row", timeout=TIMEOUT_MS)
        wall.append(time.perf_counter() - t0)
        page.wait_for_function("() => window.__fdrFirstFrame !== null", timeout=TIMEOUT_MS)
        dom.append(page.evaluate("() => window.__fdrFirstRows") / 1e3)
        frame.append(page.evaluate("() => window.__fdrFirstFrame") / 1e3)
        status = status_text(page)
        page.close()
    return wall, dom, frame, status


def bench(pw, args):
    """Time from navigation to the first page of rows drawn, `--bench-loads`
    times on the console page (with a session) and on the report file."""
    browser = launch(pw)
    out = {}
    if args.url:
        ctx, _ = login(browser, args, args.token, "admin")
        wall, dom, frame, out["console_status"] = time_loads(
            ctx, f"{args.url}{args.bench_page}", args.bench_loads)
        out["console_first_rows_s"], out["console_first_rows_dom_s"] = wall, dom
        out["console_first_rows_frame_s"] = frame
        ctx.close()
    if args.report:
        ctx = browser.new_context(offline=True)
        wall, dom, frame, out["report_status"] = time_loads(
            ctx, "file://" + os.path.abspath(args.report), args.bench_loads)
        out["report_first_rows_s"], out["report_first_rows_dom_s"] = wall, dom
        out["report_first_rows_frame_s"] = frame
        ctx.close()
    browser.close()
    print("BENCH " + json.dumps(out), flush=True)


# ------------------------------------------------------------------ main


def main(argv):
    args = parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("ui: FAILED: Playwright for Python is missing (`cargo xtask setup` installs it: "
              "python3 -m pip install playwright)", file=sys.stderr)
        return 2
    try:
        if args.url and args.ca_file:
            check_certificate(args.url, args.ca_file)
        elif args.url and not args.ignore_https_errors:
            raise Failed("give --ca-file or --ignore-https-errors")
        with sync_playwright() as pw:
            if args.bench_loads:
                bench(pw, args)
                return 0
            need = ["url", "token", "serial", "snapshot", "sha256", "node", "user", "marker",
                    "marker_rows", "expected_csv", "report", "screenshots"]
            missing = [n for n in need if getattr(args, n) is None]
            check(not missing, f"missing arguments: {missing}")
            os.makedirs(args.screenshots, exist_ok=True)
            check_unauthenticated(pw, args)
            browser = launch(pw)
            ctx, page = login(browser, args, args.token, "admin")
            check_cookie(ctx)
            check_incident_pages(page, args, args.screenshots)
            check_package(page, args)
            check_csrf(ctx, page, args, "admin")
            if args.viewer_token:
                vctx, vpage = login(browser, args, args.viewer_token, "viewer")
                check_csrf(vctx, vpage, args, "viewer")
                vctx.close()
            check_console_timeline(ctx, page, args, args.screenshots)
            ctx.close()
            check_report(browser, args, args.screenshots)
            browser.close()
    except Failed as e:
        print(f"ui: FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    print("ui: every check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
