"""The Locust users of a soak run: per brand, one user per activity of the mix, each paced to
its rate per minute; the admin on the API and in the console. Every user renews its access
token before it expires and spreads over the two hub processes.

A response is a success only when it is what the contract promises (the status and, where
cheap, the content): an overlap refused by a privacy rule (422) is an answer, a 5xx or a 429
never is. What the brands learn is checked on the way: a feed item or an audience entry named
by another brand's customer_ref counts as a leak.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import time
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from gevent.lock import Semaphore
from locust import HttpUser, User, constant_pacing, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import RescheduleTask

from bench.soak.coalition import CONSOLE_PASSWORD, CONSOLE_USER, Brand
from bench.soak.mix import Mix
from bench.soak.population import ALL, NO_SHARING, churn_digest, digest, is_stable, ref
from bench.soak.world import SAMPLED_MEMBERS, BrandState, world

RENEW_BEFORE_S = 15.0
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
CONSOLE_PAGES = (
    "/admin",
    "/admin/partners",
    "/admin/partnerships",
    "/admin/matrix",
    "/admin/offers",
    "/admin/rewards",
    "/admin/jobs",
    "/admin/audit",
)


class Tokens:
    """A client's access token, shared by every user acting for that client (as one
    integration shares its token) and fetched again shortly before it expires."""

    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id, self.secret = client_id, secret
        self.token, self.expires = "", 0.0
        self._renewing = Semaphore()

    def headers(self, user: FastHttpUser) -> dict[str, str]:
        if time.monotonic() > self.expires - RENEW_BEFORE_S:
            with self._renewing:
                if time.monotonic() > self.expires - RENEW_BEFORE_S:  # not renewed meanwhile
                    self._renew(user)
        return {"Authorization": f"Bearer {self.token}"}

    def _renew(self, user: FastHttpUser) -> None:
        basic = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        name = "POST /oauth/token"
        with user.client.post(
            "/oauth/token",
            data="grant_type=client_credentials",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            name=name,
            catch_response=True,
        ) as got:
            world().statuses[name][got.status_code] += 1
            if got.status_code != 200:
                got.failure(f"HTTP {got.status_code}: {(got.text or '')[:300]}")
                raise RescheduleTask()  # this task ends; the next one asks again
            body = got.json()
            self.token = body["access_token"]
            self.expires = time.monotonic() + float(body["expires_in"])
            world().tokens_issued += 1


_TOKENS: dict[str, Tokens] = {}


def tokens_of(client_id: str, secret: str) -> Tokens:
    return _TOKENS.setdefault(client_id, Tokens(client_id, secret))


class HubUser(FastHttpUser):
    """A client of the hub on one of its processes (users alternate between them)."""

    abstract = True
    host = "http://127.0.0.1"  # replaced per user, before the HTTP session is made

    def __init__(self, environment: Any) -> None:
        w = world()
        n = w.next_user()
        self.host = w.coalition.urls[n % len(w.coalition.urls)]
        super().__init__(environment)

    def call(
        self, method: str, path: str, name: str, ok: tuple[int, ...] = (200,), **kw: Any
    ) -> Any:
        """The response when its status is one of ``ok`` (else None, counted as a failure)."""
        kw.setdefault("headers", {}).update(self.auth())
        with self.client.request(method, path, name=name, catch_response=True, **kw) as got:
            world().statuses[name][got.status_code] += 1
            if got.status_code not in ok:
                got.failure(f"HTTP {got.status_code}: {(got.text or '')[:300]}")
                return None
            got.success()  # a 404 or 422 the contract promises is an answer, not an error
            return got

    def auth(self) -> dict[str, str]:
        raise NotImplementedError


class BrandUser(HubUser):
    abstract = True
    order: ClassVar[int] = 0  # which brand the next user of this class plays

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        cls = type(self)
        brands = world().coalition.brands
        self.brand: Brand = brands[cls.order % len(brands)]
        cls.order += 1
        self.state: BrandState = world().brands[self.brand.code]
        self.mix: Mix = world().mix
        self.tokens = tokens_of(self.brand.client_id, self.brand.client_secret)

    def auth(self) -> dict[str, str]:
        return self.tokens.headers(self)

    pacing: ClassVar[float] = 60.0

    def on_start(self) -> None:
        # Users of one activity start spread out, not all in the same second.
        time.sleep(random.uniform(0, min(10.0, self.pacing / 2)))


# -- the brands' activities -----------------------------------------------------------------
class Events(BrandUser):
    def build(self, request: int) -> list[dict[str, Any]]:
        mix, state, code = self.mix, self.state, self.brand.code
        now = datetime.now(UTC).isoformat()
        out = []
        population = world().coalition.population
        for j in range(mix.events_per_request):
            i = random.randrange(population)
            stable = is_stable(i, population)
            kind, points = "earn", 10
            spendable = state.earned[i] - state.redeemed[i]
            mine = stable and i % len(world().coalition.brands) == self.brand.index
            if mine and spendable >= 5 and random.random() < mix.redeem_share:
                kind, points = "redeem", 5
                state.redeemed[i] += 5  # reserved now: never spent twice
            event_id = f"{'s' if stable else 'v'}-{code}-{request}-{j}"
            out.append(
                {
                    "event_id": event_id,
                    "id_type": "email",
                    "id_hash": digest(i),
                    "kind": kind,
                    "points": points,
                    "occurred_at": now,
                }
            )
            if mine and len(state.sampled_events) < SAMPLED_MEMBERS:
                state.sampled_events.setdefault(i, event_id)
        return out

    @task
    def send(self) -> None:
        state = self.state
        request = next(state.requests)
        if state.last_events and request % self.mix.replay_every == self.mix.replay_every - 1:
            self.replay(state.last_events)
            return
        events = self.build(request)
        got = self.call(
            "POST", "/v1/rewards/events", "POST /v1/rewards/events", json={"events": events}
        )
        population = world().coalition.population
        if got is None:  # nothing applied: give the reserved redeems back
            for e in events:
                if e["kind"] == "redeem":
                    state.redeemed[self.person(e["id_hash"], population)] -= 5
            return
        for e in events:
            if e["kind"] == "earn" and e["event_id"].startswith("s-"):
                state.earned[self.person(e["id_hash"], population)] += 10
        state.last_events = {"events": events}

    def person(self, id_hash: str, population: int) -> int:
        cache = self.__dict__.setdefault("_people", {})
        if not cache:
            cache.update({digest(i): i for i in range(population)})
        return int(cache[id_hash])

    def replay(self, body: dict[str, Any]) -> None:
        got = self.call("POST", "/v1/rewards/events", "POST /v1/rewards/events (replay)", json=body)
        if got is None:
            return
        answer = got.json()
        if answer.get("applied") == 0 and answer.get("replayed") == len(body["events"]):
            world().replays["replayed"] += 1
        else:
            world().replays["applied_again"] += 1
            got.failure(f"a replay applied events again: {json.dumps(answer)[:300]}")


class Overlaps(BrandUser):
    @task
    def ask(self) -> None:
        partnership = random.choice(self.brand.partnerships)
        by = random.choice([None, "self.tier", "self.tier,partner.city"])
        query = {"purpose": "analytics", **({"by": by} if by else {})}
        name = "GET /v1/partnerships/{id}/overlap" + ("?by=" if by else "")
        got = self.call(
            "GET", f"/v1/partnerships/{partnership}/overlap?{urlencode(query)}", name, ok=(200, 422)
        )
        if got is not None and got.status_code == 422 and "privacy" not in (got.text or ""):
            got.failure(f"422 that is not a privacy refusal: {got.text[:300]}")


class Audiences(BrandUser):
    @task
    def read(self) -> None:
        """``audience_pages`` pages of the offer's audience from where the last read stopped
        (0: the whole audience), as a partner syncing a large audience page by page does."""
        state, offer = self.state, self.brand.offer_id
        pages = 0
        while not self.mix.audience_pages or pages < self.mix.audience_pages:
            pages += 1
            cursor = state.audience_cursor
            query = {"limit": self.mix.audience_page, **({"cursor": cursor} if cursor else {})}
            got = self.call(
                "GET",
                f"/v1/offers/{offer}/audience?{urlencode(query)}",
                "GET /v1/offers/{id}/audience",
            )
            if got is None:
                return
            page = got.json()
            refs = [item["customer_ref"] for item in page["items"]]
            if state.audience_seen.intersection(refs):
                got.failure("an audience page repeats a customer_ref")
            if any(not r.startswith(f"{self.brand.code}-") for r in refs):
                state.foreign_refs += 1
                got.failure("another brand's customer_ref in the audience")
            state.audience_seen.update(refs)
            state.audience_cursor = page.get("next_cursor")
            if not state.audience_cursor:
                state.audience_seen.clear()  # the pass is over: the next read starts again
                return


class Feeds(BrandUser):
    @task
    def read(self) -> None:
        state = self.state
        while True:
            query = {"limit": self.mix.feed_page}
            if state.feed_cursor:
                query["cursor"] = state.feed_cursor  # type: ignore[assignment]
            got = self.call("GET", f"/v1/rewards/feed?{urlencode(query)}", "GET /v1/rewards/feed")
            if got is None:
                return
            page = got.json()
            for item in page["items"]:
                if item["id"] in state.feed_seen:
                    state.feed_seen_twice += 1
                state.feed_seen.add(item["id"])
                if not item["customer_ref"].startswith(f"{self.brand.code}-"):
                    state.foreign_refs += 1
                    got.failure("another brand's customer_ref in the feed")
            state.feed_cursor = page.get("next_cursor") or state.feed_cursor
            if not page.get("has_more"):
                return


class Balances(BrandUser):
    @task
    def ask(self) -> None:
        population = world().coalition.population
        if random.random() < 0.2:
            # Another brand's reference is not one of ours: 404, as for an unknown person.
            other = random.choice([b for b in world().coalition.brands if b is not self.brand])
            query = urlencode({"customer_ref": ref(other.code, random.randrange(population))})
            self.call(
                "GET",
                f"/v1/rewards/balances?{query}",
                "GET /v1/rewards/balances (foreign)",
                ok=(404,),
            )
            return
        query = urlencode({"customer_ref": ref(self.brand.code, random.randrange(population))})
        self.call("GET", f"/v1/rewards/balances?{query}", "GET /v1/rewards/balances")


class Consents(BrandUser):
    @task
    def change(self) -> None:
        population = world().coalition.population
        people = random.sample(range(population // 2, population), self.mix.consent_batch)
        updates = [
            {"customer_ref": ref(self.brand.code, i), "consents": random.choice([ALL, NO_SHARING])}
            for i in people
        ]
        self.call(
            "POST",
            "/v1/identifiers/consents",
            "POST /v1/identifiers/consents",
            json={"updates": updates},
        )


class Erasures(BrandUser):
    @task
    def churn(self) -> None:
        code = self.brand.code
        n = next(self.state.churn)
        person = {
            "id_type": "email",
            "id_hash": churn_digest(code, n),
            "customer_ref": f"{code}-churn-{n}",
            "consents": ALL,
        }
        if (
            self.call("POST", "/v1/identifiers", "POST /v1/identifiers", json={"records": [person]})
            is None
        ):
            return
        event = {
            "event_id": f"c-{code}-{n}",
            "id_type": "email",
            "id_hash": person["id_hash"],
            "kind": "earn",
            "points": 10,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        self.call(
            "POST",
            "/v1/rewards/events",
            "POST /v1/rewards/events (churn)",
            json={"events": [event]},
        )
        self.call(
            "POST",
            "/v1/identifiers/erase",
            "POST /v1/identifiers/erase",
            json={"customer_refs": [person["customer_ref"]]},
        )


class Uploads(BrandUser):
    @task
    def upload(self) -> None:
        path = world().upload_files[self.brand.code]
        started = time.monotonic()
        got = self.call(
            "POST",
            "/v1/identifiers/uploads?mode=upsert",
            "POST /v1/identifiers/uploads",
            ok=(202,),
            data=path.read_bytes(),
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )
        if got is None:
            return
        upload_id = got.json()["id"]
        record: dict[str, Any] = {
            "brand": self.brand.code,
            "id": upload_id,
            "rows": self.mix.upload_rows,
        }
        world().uploads.append(record)
        while True:
            time.sleep(2.0)
            status = self.call(
                "GET", f"/v1/identifiers/uploads/{upload_id}", "GET /v1/identifiers/uploads/{id}"
            )
            if status is None:
                continue
            body = status.json()
            record.update(
                status=body["status"], accepted=body.get("accepted"), refused=body.get("refused")
            )
            if body["status"] in ("completed", "failed"):
                record["seconds"] = round(time.monotonic() - started, 1)
                return


# -- the admin ------------------------------------------------------------------------------
class AdminApi(HubUser):
    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        c = world().coalition
        self.tokens = tokens_of(c.admin_id, c.admin_secret)

    def auth(self) -> dict[str, str]:
        return self.tokens.headers(self)

    @task
    def read(self) -> None:
        path, name = random.choice(
            [
                ("/v1/jobs", "GET /v1/jobs"),
                ("/v1/audit/head", "GET /v1/audit/head"),
                ("/v1/webhooks/deliveries?status=pending", "GET /v1/webhooks/deliveries"),
                ("/v1/audit?limit=50", "GET /v1/audit"),
            ]
        )
        self.call("GET", path, name)


class Console(HttpUser):
    """An admin in a browser: signs in once, then opens pages."""

    host = "http://127.0.0.1"

    def __init__(self, environment: Any) -> None:
        w = world()
        self.host = w.coalition.urls[w.next_user() % len(w.coalition.urls)]
        super().__init__(environment)

    def on_start(self) -> None:
        form = self.client.get("/admin/sign-in", name="GET /admin/sign-in")
        found = CSRF.search(form.text)
        with self.client.post(
            "/admin/sign-in",
            data={
                "_csrf": found.group(1) if found else "",
                "username": CONSOLE_USER,
                "password": CONSOLE_PASSWORD,
            },
            allow_redirects=False,
            name="POST /admin/sign-in",
            catch_response=True,
        ) as got:
            world().statuses["POST /admin/sign-in"][got.status_code] += 1
            if got.status_code != 303:
                got.failure(f"sign-in answered {got.status_code}")

    # Pages in turn (shared by every console user), not at random: a short run with a few
    # views still opens each page.
    turns = itertools.count()

    @task
    def view(self) -> None:
        page = CONSOLE_PAGES[next(Console.turns) % len(CONSOLE_PAGES)]
        name = f"GET {page} (console)"
        with self.client.get(page, name=name, allow_redirects=False, catch_response=True) as got:
            world().statuses[name][got.status_code] += 1
            if got.status_code != 200:
                got.failure(f"HTTP {got.status_code}")


def user_classes(mix: Mix, brands: int) -> list[type[User]]:
    """One class per activity, ``fixed_count`` users each, paced to the mix's rate."""
    per_brand: list[tuple[type[BrandUser], float]] = [
        (Events, mix.event_requests),
        (Overlaps, mix.overlaps),
        (Audiences, mix.audience_reads),
        (Feeds, mix.feed_reads),
        (Balances, mix.balances),
        (Consents, mix.consent_changes),
        (Erasures, mix.erasures),
        (Uploads, 1.0 / mix.upload_every_minutes if mix.upload_rows else 0.0),
    ]
    out: list[type[User]] = []
    for base, rate in per_brand:
        if rate > 0:
            out.append(_paced(base, rate, brands))
    for base, rate in ((AdminApi, mix.admin_reads), (Console, mix.console_views)):
        if rate > 0:
            out.append(_paced(base, rate, 1))
    return out


def _paced(base: type[User], per_minute: float, count: int) -> type[User]:
    return type(
        base.__name__,
        (base,),
        {
            "fixed_count": count,
            "wait_time": constant_pacing(60.0 / per_minute),
            "pacing": 60.0 / per_minute,
            "order": 0,
        },
    )
