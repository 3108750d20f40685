"""DNS for the From domain: SPF covers the transport, DKIM keys exist, DMARC exists, one of
them is aligned with the From domain, and the reply domain's MX reaches Inbound Parse.

SendGrid: SPF is either `include:sendgrid.net` on the From domain or, with automated security,
the return-path CNAME (`em1234.example.com`, from `[doctor] return_path` or from SendGrid's
API); DKIM is the `s1`/`s2._domainkey` CNAMEs. SMTP: SPF covers `[doctor] spf_include` or the
configured host's addresses; DKIM is `[doctor] dkim_selectors`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter.doctor.checks import Check, Status
from newsletter.doctor.records import Lookup, LookupFailed
from newsletter.doctor.sendgrid_domains import Cname, DomainAuthentication, authentication_for
from newsletter.errors import ConfigError
from newsletter.project import Project
from newsletter.sending.factory import DEFAULT_KIND
from newsletter.sending.transports import transport_class
from newsletter.sending.transports.sendgrid import api_key as sendgrid_api_key

SENDGRID_SPF = "sendgrid.net"
SENDGRID_MX = "mx.sendgrid.net"
SENDGRID_SELECTORS = ("s1", "s2")
SENDER_AUTH = "SendGrid: Settings > Sender Authentication"


def _check(name: str, status: Status, found: str, fix: str | None = None) -> Check:
    return Check("dns", name, status, found, fix)


@dataclass
class Context:
    """What the DNS checks share: the From domain, the transport, and what they found."""

    project: Project
    lookup: Lookup
    domain: str
    transport: str
    auth: DomainAuthentication | None = None
    #: The SPF-checked return-path domain, once the SPF check has found it covered.
    spf_domain: str | None = None
    dkim_ok: bool = False
    dns_failed: bool = False
    provider: Provider | None = None


def transport_kind(project: Project) -> str:
    return project.config.section("sending")["transport"] or DEFAULT_KIND


@dataclass(frozen=True)
class Provider:
    """What one transport's mail needs in DNS: the doctor's knowledge of a provider, looked
    up by the transport's kind (a transport it does not know gets a warning, not a guess)."""

    spf: Callable[[Context], Check]
    dkim: Callable[[Context], Check]
    #: The fix when neither DKIM nor SPF is aligned with the From domain.
    alignment_fix: str
    #: Learns the provider's own records (SendGrid's API), or None.
    learn: Callable[[Context, bool], Check | None] = lambda _ctx, _offline: None


def provider_for(kind: str) -> Provider | None:
    return PROVIDERS.get(kind)


def dns_checks(project: Project, lookup: Lookup, *, offline: bool) -> list[Check]:
    domain = project.config.from_email.rpartition("@")[2].strip().lower()
    ctx = Context(project, lookup, domain, transport_kind(project))
    if not transport_class(ctx.transport).capabilities.delivers:
        return [_check("DNS", Status.SKIP, f"the {ctx.transport} transport sends no mail")]
    provider = provider_for(ctx.transport)
    if provider is None:
        return [
            _check(
                "DNS",
                Status.WARN,
                f"doctor knows no DNS records for the {ctx.transport} transport",
                "check SPF, DKIM and DMARC with your provider's instructions",
            )
        ]
    ctx.provider = provider
    checks: list[Check] = []
    learned = provider.learn(ctx, offline)
    if learned is not None:
        checks.append(learned)
    for run in (spf, dkim, dmarc_and_alignment, reply_mx):
        if ctx.dns_failed:
            # One silent server is enough to know: the user need not wait for each lookup.
            checks.append(_check(CHECK_NAMES[run.__name__], Status.SKIP, "not asked (no DNS)"))
            continue
        checks += _guarded(run, ctx)
    return checks


CHECK_NAMES = {"spf": "SPF", "dkim": "DKIM", "dmarc_and_alignment": "DMARC", "reply_mx": "reply MX"}


def _guarded(run: Callable[[Context], list[Check]], ctx: Context) -> list[Check]:
    """`run`, or one ✗ row saying DNS did not answer (not that the record is missing)."""
    try:
        return run(ctx)
    except LookupFailed as exc:
        ctx.dns_failed = True
        return [
            _check(
                CHECK_NAMES[run.__name__],
                Status.FAIL,
                f"no answer from DNS: {exc}",
                "check the network, or ask another server with --nameserver HOST[:PORT]",
            )
        ]


def _learn_from_sendgrid(ctx: Context, offline: bool) -> Check | None:
    """SendGrid's records for the From domain, when a key is set and the network may be used."""

    if offline:
        return None
    try:
        api_key = sendgrid_api_key()
    except ConfigError as exc:  # (the setup checks say so too)
        return _check("SendGrid domain", Status.FAIL, str(exc))
    if not api_key:
        return None
    name = "SendGrid domain"
    try:
        result = authentication_for(ctx.project, ctx.domain, api_key)
    except ConfigError as exc:  # (SENDGRID_API_HOST that is no URL: the transport row says so)
        return _check(name, Status.FAIL, str(exc))
    if isinstance(result, str):
        return _check(
            name,
            Status.WARN,
            result,
            f"authenticate {ctx.domain} ({SENDER_AUTH}), or set [doctor] return_path",
        )
    ctx.auth = result
    records = [c.host for c in (result.return_path, *result.dkim) if c]
    return _check(name, Status.OK, f"{result.domain} is authenticated: {', '.join(records)}")


# --- SPF -------------------------------------------------------------------------------------


def spf_records(lookup: Lookup, domain: str) -> list[str]:
    return [t for t in lookup.txt(domain) if t.lower().startswith("v=spf1")]


def spf_terms(record: str) -> list[str]:
    """The mechanisms of an SPF record, lower-case, qualifiers (+ - ~ ?) removed."""
    return [term.lstrip("+-~?").lower() for term in record.split()[1:]]


#: Receivers stop evaluating SPF after this many DNS-querying terms (RFC 7208 §4.6.4).
SPF_LOOKUP_LIMIT = 10
_QUERYING = ("include", "a", "mx", "ptr", "exists", "redirect")


@dataclass
class SpfTree:
    """An SPF record with its includes (and redirect) followed, as a receiver reads it."""

    terms: list[str] = field(default_factory=list)
    #: The include:/redirect= domains reached, in order.
    includes: list[str] = field(default_factory=list)
    lookups: int = 0


def expand_spf(lookup: Lookup, record: str) -> SpfTree:
    tree = SpfTree()
    seen: set[str] = set()

    def walk(text: str, depth: int) -> None:
        for term in spf_terms(text):
            tree.terms.append(term)
            kind, _, target = term.replace("=", ":", 1).partition(":")
            if kind in _QUERYING:
                tree.lookups += 1
            follow = kind in ("include", "redirect") and target and target not in seen
            if follow and depth < 5 and tree.lookups <= SPF_LOOKUP_LIMIT:
                seen.add(target)
                tree.includes.append(target)
                found = spf_records(lookup, target)
                if len(found) == 1:
                    walk(found[0], depth + 1)

    walk(record, 0)
    return tree


def _too_many_lookups(domain: str, tree: SpfTree) -> Check | None:
    if tree.lookups <= SPF_LOOKUP_LIMIT:
        return None
    return _check(
        "SPF",
        Status.FAIL,
        f"the SPF record of {domain} needs {tree.lookups} DNS lookups; receivers stop at "
        f"{SPF_LOOKUP_LIMIT} and fail it",
        "drop include:s you no longer send through, or replace some by their ip4:/ip6: ranges",
    )


def _spf_record_line(domain: str, include: str) -> str:
    return f'{domain} TXT "v=spf1 include:{include} ~all"'


def spf(ctx: Context) -> list[Check]:
    assert ctx.provider is not None
    return [ctx.provider.spf(ctx)]


def _return_path(ctx: Context) -> Cname | None:
    configured = ctx.project.config.section("doctor")["return_path"]
    if configured:
        target = ctx.auth.return_path.target if ctx.auth and ctx.auth.return_path else None
        return Cname(configured.strip().rstrip(".").lower(), target)
    return ctx.auth.return_path if ctx.auth else None


def _spf_sendgrid(ctx: Context) -> Check:
    records = spf_records(ctx.lookup, ctx.domain)
    return_path = _return_path(ctx)
    if return_path is not None:
        found = ctx.lookup.cname(return_path.host)
        wanted = return_path.target or f"the uNNN.wlNNN.{SENDGRID_SPF} name SendGrid shows"
        if found is None:
            return _check(
                "SPF",
                Status.FAIL,
                f"the return path {return_path.host} has no CNAME",
                f"add {return_path.host} CNAME {wanted} ({SENDER_AUTH})",
            )
        if not _is_sendgrid(found, return_path.target):
            return _check(
                "SPF",
                Status.FAIL,
                f"the return path {return_path.host} points to {found}, not SendGrid",
                f"change {return_path.host} CNAME to {wanted}",
            )
        ctx.spf_domain = return_path.host
        return _check("SPF", Status.OK, f"return path {return_path.host} -> {found}")
    if len(records) > 1:
        return _two_spf_records(ctx.domain, records)
    tree = expand_spf(ctx.lookup, records[0]) if records else SpfTree()
    too_many = _too_many_lookups(ctx.domain, tree)
    if too_many:
        return too_many
    if SENDGRID_SPF in tree.includes:
        # SendGrid's own return path (sendgrid.net): SPF passes, but for sendgrid.net.
        return _check("SPF", Status.OK, f"{records[0]!r} includes {SENDGRID_SPF}")
    found = f"no SPF record at {ctx.domain}" if not records else repr(records[0])
    return _check(
        "SPF",
        Status.FAIL,
        f"{found}; it does not cover SendGrid",
        f"{_spf_fix(ctx.domain, records, SENDGRID_SPF)}; or, with SendGrid's automated "
        f"security, set [doctor] return_path to the em....{ctx.domain} name SendGrid shows "
        "(or set SENDGRID_API_KEY so doctor can ask SendGrid)",
    )


def _is_sendgrid(target: str, wanted: str | None) -> bool:
    if wanted:
        return target == wanted
    return target == SENDGRID_SPF or target.endswith("." + SENDGRID_SPF)


def _two_spf_records(domain: str, records: list[str]) -> Check:
    return _check(
        "SPF",
        Status.FAIL,
        f"{len(records)} SPF records at {domain}; receivers treat that as an error",
        "merge them into one TXT record starting with v=spf1",
    )


def _spf_fix(domain: str, records: list[str], include: str) -> str:
    if not records:
        return f"add {_spf_record_line(domain, include)}"
    terms = records[0].split()
    return f'change the SPF record of {domain} to "{" ".join([terms[0], f"include:{include}", *terms[1:]])}"'


def _spf_smtp(ctx: Context) -> Check:
    records = spf_records(ctx.lookup, ctx.domain)
    smtp = ctx.project.config.section("smtp")
    include = ctx.project.config.section("doctor")["spf_include"]
    host = (smtp["host"] or "").lower()
    if len(records) > 1:
        return _two_spf_records(ctx.domain, records)
    tree = expand_spf(ctx.lookup, records[0]) if records else SpfTree()
    too_many = _too_many_lookups(ctx.domain, tree)
    if too_many:
        return too_many
    terms = tree.terms
    if include:
        if include.lower() in tree.includes:
            ctx.spf_domain = ctx.domain
            return _check("SPF", Status.OK, f"{records[0]!r} includes {include}")
        what = f"include:{include}"
    else:
        if host and (f"a:{host}" in terms or f"include:{host}" in terms):
            ctx.spf_domain = ctx.domain
            return _check("SPF", Status.OK, f"{host} in {records[0]!r}")
        covered = _covering_network(terms, _host_addresses(ctx.lookup, host))
        if covered:
            ctx.spf_domain = ctx.domain
            return _check("SPF", Status.OK, f"{host} ({covered}) in {records[0]!r}")
        what = f"the SMTP host {host or '(not set)'}"
    found = f"no SPF record at {ctx.domain}" if not records else repr(records[0])
    fix = (
        _spf_fix(ctx.domain, records, include)
        if include
        else (
            "set [doctor] spf_include to the SPF domain your mail provider names "
            f"(then add include:... to the SPF record of {ctx.domain}), or add a:{host or 'HOST'}"
        )
    )
    return _check("SPF", Status.FAIL, f"{found}; it does not cover {what}", fix)


def _host_addresses(lookup: Lookup, host: str) -> list[str]:
    if not host:
        return []
    try:
        return [str(ipaddress.ip_address(host))]  # the host is given as an address
    except ValueError:
        return lookup.addresses(host)


def _covering_network(terms: list[str], addresses: list[str]) -> str | None:
    """The ip4:/ip6: network of `terms` holding one of `addresses`, as written."""
    for term in terms:
        kind, _, network = term.partition(":")
        if kind not in ("ip4", "ip6") or not network:
            continue
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            continue
        for address in addresses:
            if ipaddress.ip_address(address) in net:
                return term
    return None


# --- DKIM ------------------------------------------------------------------------------------


def dkim(ctx: Context) -> list[Check]:
    selectors = ctx.project.config.section("doctor")["dkim_selectors"]
    if selectors:
        return [_dkim_keys(ctx, selectors)]
    assert ctx.provider is not None
    return [ctx.provider.dkim(ctx)]


def _dkim_smtp(_ctx: Context) -> Check:
    return _check(
        "DKIM",
        Status.WARN,
        "no [doctor] dkim_selectors, so the DKIM key cannot be looked up",
        'set [doctor] dkim_selectors = ["SELECTOR"] (your mail provider names it; it '
        "is the s= of a DKIM-Signature header in a mail you sent)",
    )


def _dkim_sendgrid(ctx: Context) -> Check:
    wanted = (
        list(ctx.auth.dkim)
        if ctx.auth and ctx.auth.dkim
        else [Cname(f"{s}._domainkey.{ctx.domain}", None) for s in SENDGRID_SELECTORS]
    )
    problems, fixes, good = [], [], []
    for record in wanted:
        found = ctx.lookup.cname(record.host)
        target = record.target or f"{record.host.split('.')[0]}.domainkey.uNNN.wlNNN.{SENDGRID_SPF}"
        if found is None:
            problems.append(f"{record.host} has no CNAME")
            fixes.append(f"add {record.host} CNAME {target}")
        elif not _is_sendgrid(found, record.target):
            problems.append(f"{record.host} points to {found}")
            fixes.append(f"change {record.host} CNAME to {target}")
        else:
            good.append(f"{record.host} -> {found}")
    if problems:
        where = "" if ctx.auth else f" (the names {SENDER_AUTH} shows)"
        return _check("DKIM", Status.FAIL, "; ".join(problems), "; ".join(fixes) + where)
    ctx.dkim_ok = True
    return _check("DKIM", Status.OK, "; ".join(good))


def _dkim_keys(ctx: Context, selectors: list[str]) -> Check:
    problems, good = [], []
    for selector in selectors:
        name = f"{selector}._domainkey.{ctx.domain}"
        target = ctx.lookup.cname(name)
        keys = [t for t in ctx.lookup.txt(target or name) if "p=" in t.replace(" ", "")]
        if keys and not _revoked(keys[0]):
            good.append(f"{name}" + (f" -> {target}" if target else "") + " has a key")
        elif target:
            good.append(f"{name} -> {target}")  # the provider's name: its key is theirs to keep
        elif keys:
            problems.append(f"{name}: the key is empty (revoked)")
        else:
            problems.append(f"{name}: no DKIM key")
    if problems:
        return _check(
            "DKIM",
            Status.FAIL,
            "; ".join(problems),
            "add the DKIM record(s) your mail provider shows for these selectors, or correct "
            "[doctor] dkim_selectors",
        )
    ctx.dkim_ok = True
    return _check("DKIM", Status.OK, "; ".join(good))


def _revoked(record: str) -> bool:
    tags = dict(_tags(record))
    return not tags.get("p")


def _tags(record: str) -> list[tuple[str, str]]:
    pairs = []
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            pairs.append((key.strip().lower(), value.strip()))
    return pairs


# --- DMARC and alignment ---------------------------------------------------------------------


def organizational_domain(domain: str) -> str:
    """The registered domain, roughly (the last two labels; no public-suffix list)."""
    return ".".join(domain.split(".")[-2:])


def dmarc_and_alignment(ctx: Context) -> list[Check]:
    record, where = _dmarc_record(ctx)
    if record is None:
        dmarc = _check(
            "DMARC",
            Status.FAIL,
            f"no DMARC record at _dmarc.{ctx.domain}",
            f'add _dmarc.{ctx.domain} TXT "v=DMARC1; p=none; rua=mailto:dmarc@{ctx.domain}"',
        )
        tags: dict[str, str] = {}
    else:
        tags = dict(_tags(record))
        policy = tags.get("p", "").lower()
        if policy not in ("none", "quarantine", "reject"):
            dmarc = _check(
                "DMARC",
                Status.FAIL,
                f"{where}: {record!r} has no valid policy (p=)",
                f'make it "v=DMARC1; p=none; rua=mailto:dmarc@{ctx.domain}"',
            )
        else:
            meaning = {
                "none": "monitoring only",
                "quarantine": "failing mail goes to spam",
                "reject": "failing mail is refused",
            }[policy]
            dmarc = _check("DMARC", Status.OK, f"p={policy} ({meaning}) at {where}")
    return [dmarc, _alignment(ctx, tags)]


def _dmarc_record(ctx: Context) -> tuple[str | None, str]:
    names = [f"_dmarc.{ctx.domain}"]
    org = organizational_domain(ctx.domain)
    if org != ctx.domain:
        names.append(f"_dmarc.{org}")  # a subdomain falls back to its organization's policy
    for name in names:
        records = [
            t for t in ctx.lookup.txt(name) if t.replace(" ", "").upper().startswith("V=DMARC1")
        ]
        if records:
            return records[0], name
    return None, names[0]


def _aligned(domain: str, signer: str, strict: bool) -> bool:
    if strict:
        return domain == signer
    return organizational_domain(domain) == organizational_domain(signer)


def _alignment(ctx: Context, tags: dict[str, str]) -> Check:
    found = []
    dkim_aligned = ctx.dkim_ok  # keys under the From domain: d= is the From domain
    if dkim_aligned:
        found.append(f"DKIM signs as {ctx.domain}")
    spf_domain = ctx.spf_domain
    spf_aligned = spf_domain is not None and _aligned(
        ctx.domain, spf_domain, tags.get("aspf", "r").lower() == "s"
    )
    if spf_aligned:
        found.append(f"SPF checks {spf_domain}")
    if dkim_aligned or spf_aligned:
        return _check("alignment", Status.OK, "; ".join(found) + f" (From: {ctx.domain})")
    assert ctx.provider is not None
    return _check(
        "alignment",
        Status.FAIL,
        f"neither DKIM nor SPF is aligned with {ctx.domain}: mail fails DMARC",
        ctx.provider.alignment_fix.format(domain=ctx.domain),
    )


# --- the reply domain ------------------------------------------------------------------------


def reply_mx(ctx: Context) -> list[Check]:
    domain = ctx.project.config.section("replies")["domain"]
    if not domain:
        return [_check("reply MX", Status.SKIP, "[replies] domain is not set (no Inbound Parse)")]
    domain = domain.strip().rstrip(".").lower()
    found = ctx.lookup.mx(domain)
    fix = f"add {domain} MX 10 {SENDGRID_MX}"
    if not found:
        return [_check("reply MX", Status.FAIL, f"no MX record for {domain}", fix)]
    if not any(mx.host == SENDGRID_MX for mx in found):
        hosts = ", ".join(mx.host for mx in found)
        return [
            _check(
                "reply MX",
                Status.FAIL,
                f"{domain} MX points to {hosts}, not SendGrid's Inbound Parse",
                f"make {domain} MX 10 {SENDGRID_MX} its only MX record",
            )
        ]
    return [_check("reply MX", Status.OK, f"{domain} MX {SENDGRID_MX}")]


PROVIDERS = {
    "sendgrid": Provider(
        spf=_spf_sendgrid,
        dkim=_dkim_sendgrid,
        alignment_fix=f"authenticate {{domain}} at SendGrid ({SENDER_AUTH}) and add its CNAMEs",
        learn=_learn_from_sendgrid,
    ),
    "smtp": Provider(
        spf=_spf_smtp,
        dkim=_dkim_smtp,
        alignment_fix=(
            "have your mail provider sign with DKIM as {domain}, and name the selector in "
            "[doctor] dkim_selectors"
        ),
    ),
}
