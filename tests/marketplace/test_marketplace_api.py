"""POP Market's JSON API against a real 4-node cluster: every authorisation rule tried and
refused, bad input refused without changes, charges, purchases (double submit included),
refunds, reclaims after the deadline, reviews, and a node crash in the middle of a purchase."""
import json
import subprocess
import threading
import time

import pytest

from market_client import Market, find_popmarket, wait_until

PASSWORD = "correct horse battery"


def member(market, name, charge=0, admin=None):
    """A new member, with `charge` minted (through the charge queue) when non-zero."""
    c = market.client()
    c.signup(name)
    if charge:
        r = c.post("/api/charges", {"amount": charge})
        assert r.status == 201, r
        admin = admin or market.admin()
        r = admin.post(f"/api/admin/charges/{r.body['id']}/approve")
        assert r.status == 200 and r.body["status"] == "approved", r
    return c


def product(client, price=100, title="Bicycle"):
    r = client.post("/api/products", {"title": title, "description": "barely used", "price": price})
    assert r.status == 201, r
    return r.body


def balances(cluster, address):
    return [cluster.account(address, i)["balance"] for i in cluster.nodes() if cluster.pid(i)]


def counts(market_client):
    """What a bad request must not change."""
    p = market_client.get("/api/products?limit=60").body["total"]
    return p


# ---------------------------------------------------------------- members and sessions

def test_signup_login_logout_and_cookie_flags(market, name):
    c = market.client()
    user = name()
    r = c.post("/api/signup", {"username": user, "password": PASSWORD})
    assert r.status == 201
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert r.body["member"]["address"].startswith("pop")
    assert c.get("/api/me").status == 200
    # The same name twice is refused.
    assert market.client().post("/api/signup", {"username": user, "password": PASSWORD}).status == 409
    # Wrong password, unknown user: the same answer.
    other = market.client()
    assert other.login(user, "wrong password").status == 401
    assert other.login(name("ghost"), "wrong password").status == 401
    assert other.get("/api/me").status == 401
    # Log out ends the session on the server, not only in the browser.
    old_cookie = c.cookie
    assert c.post("/api/logout").status == 200
    c.cookie = old_cookie
    assert c.get("/api/me").status == 401
    # And logging in again gives the same wallet.
    again = market.client()
    r = again.login(user, PASSWORD)
    assert r.status == 200 and r.body["member"]["username"] == user


def test_signup_refuses_bad_input(market, name):
    c = market.client()
    for body in ({"username": "ab", "password": PASSWORD},          # too short
                 {"username": "bad name!", "password": PASSWORD},   # characters
                 {"username": name(), "password": "short"},         # weak password
                 {"username": name(), "password": PASSWORD, "admin": True},  # unknown field
                 {"username": 5, "password": PASSWORD},
                 ["not", "an", "object"]):
        r = c.post("/api/signup", body)
        assert r.status == 400, (body, r)
        assert c.cookie is None
    assert c.post("/api/signup", raw=b"{not json").status == 400


# ---------------------------------------------------------------- authorisation

MEMBER_ROUTES = [
    ("GET", "/api/me"), ("POST", "/api/logout"), ("POST", "/api/products"),
    ("POST", "/api/products/1/buy"), ("GET", "/api/trades"), ("GET", "/api/trades/" + "0" * 64),
    ("POST", "/api/trades/" + "0" * 64 + "/confirm"), ("POST", "/api/trades/" + "0" * 64 + "/cancel"),
    ("POST", "/api/trades/" + "0" * 64 + "/reclaim"), ("POST", "/api/trades/" + "0" * 64 + "/review"),
    ("POST", "/api/charges"), ("GET", "/api/charges"),
]
ADMIN_ROUTES = [("GET", "/api/admin/charges"), ("POST", "/api/admin/charges/1/approve"),
                ("POST", "/api/admin/charges/1/reject")]


def test_anonymous_callers_are_refused(market):
    anon = market.client()
    for method, path in MEMBER_ROUTES + ADMIN_ROUTES:
        r = anon.request(method, path, {})
        assert r.status == 401, (method, path, r)
        assert r.code == "unauthenticated"


def test_members_cannot_use_admin_routes(market, name):
    # The role is given by popmarket's configuration: its name cannot be signed up for.
    assert market.client().post("/api/signup", {"username": "admin", "password": PASSWORD}).status == 409
    c = member(market, name())
    assert c.get("/api/session").body["member"]["is_admin"] is False
    r = c.post("/api/charges", {"amount": 50})
    charge = r.body["id"]
    for method, path in ADMIN_ROUTES:
        assert c.request(method, path, {}).status == 403, path
    assert c.post(f"/api/admin/charges/{charge}/approve").status == 403
    # Nothing was minted, and the request is still waiting.
    assert c.get("/api/me").body["balance"] == 0
    assert c.get("/api/charges").body["charges"][0]["status"] == "requested"


def test_state_changes_need_the_csrf_token_and_json(market, name):
    c = member(market, name())
    before = counts(c)
    assert c.post("/api/products", {"title": "x", "price": 5}, csrf=None).status == 403
    assert c.post("/api/products", {"title": "x", "price": 5}, csrf="0" * 32).status == 403
    # A form post (what a cross-site page could send without a preflight) is refused.
    r = c.post("/api/products", raw=b"title=x&price=5",
               content_type="application/x-www-form-urlencoded")
    assert r.status == 415
    # Another member's token does not work with this session either.
    other = member(market, name())
    assert c.post("/api/products", {"title": "x", "price": 5}, csrf=other.csrf).status == 403
    assert counts(c) == before
    assert c.post("/api/products", {"title": "x", "price": 5}).status == 201


def test_private_data_is_not_shared(market, name):
    alice, bob = member(market, name()), member(market, name())
    alice.post("/api/charges", {"amount": 77})
    assert bob.get("/api/charges").body["charges"] == []
    assert all(c["amount"] != 77 or c["member"] != "" for c in alice.get("/api/charges").body["charges"])
    # /api/me is always the caller's own.
    assert bob.get("/api/me").body["member"]["username"] != alice.get("/api/me").body["member"]["username"]


# ---------------------------------------------------------------- charges

def test_charge_approve_reject_and_balance_on_every_node(market, cluster, name):
    admin = market.admin()
    c = member(market, name())
    address = c.get("/api/me").body["member"]["address"]
    r = c.post("/api/charges", {"amount": 300})
    assert r.status == 201 and r.body["status"] == "requested"
    queue = admin.get("/api/admin/charges").body["charges"]
    assert any(q["id"] == r.body["id"] for q in queue)
    assert c.get("/api/me").body["balance"] == 0
    ok = admin.post(f"/api/admin/charges/{r.body['id']}/approve")
    assert ok.status == 200 and ok.body["status"] == "approved" and ok.body["txid"]
    # Committed: every node holds the same balance.
    wait_until(lambda: balances(cluster, address) == [300] * 4)
    # Approving twice mints once.
    assert admin.post(f"/api/admin/charges/{r.body['id']}/approve").status == 409
    assert admin.post(f"/api/admin/charges/{r.body['id']}/reject").status == 409
    rejected = c.post("/api/charges", {"amount": 40}).body["id"]
    assert admin.post(f"/api/admin/charges/{rejected}/reject", {"note": "no"}).status == 200
    assert admin.post(f"/api/admin/charges/{rejected}/approve").status == 409
    assert c.get("/api/me").body["balance"] == 300
    # Bad amounts change nothing.
    n = len(c.get("/api/charges").body["charges"])
    for body in ({"amount": 0}, {"amount": -5}, {"amount": "9"}, {"amount": 10**12}, {"amount": 1.5}, {}):
        assert c.post("/api/charges", body).status == 400, body
    assert len(c.get("/api/charges").body["charges"]) == n
    assert admin.post("/api/admin/charges/999999/approve").status == 404


def test_auto_approval_under_the_limit(cluster, tmp_path, name):
    m = Market(cluster, tmp_path / "auto", auto_approve_limit=100)
    try:
        c = member(m, name())
        small = c.post("/api/charges", {"amount": 100})
        assert small.status == 201 and small.body["status"] == "approved"
        assert small.body["decided_by"] == "auto"
        big = c.post("/api/charges", {"amount": 101})
        assert big.body["status"] == "requested"
        assert c.get("/api/me").body["balance"] == 100
    finally:
        m.close()


# ---------------------------------------------------------------- products

def test_products_bad_input_search_and_paging(market, name):
    seller = member(market, name())
    before = counts(seller)
    bad = [{"title": "", "price": 5}, {"title": "x" * 101, "price": 5}, {"title": "x", "price": 0},
           {"title": "x", "price": -1}, {"title": "x"}, {"title": "x", "price": 5, "seller_id": 1},
           {"title": "x", "price": 5, "photo": "data:text/html;base64,PGI+"},
           {"title": "x", "price": 5, "photo": "data:image/png;base64,!!!"}]
    for body in bad:
        assert seller.post("/api/products", body).status == 400, body
    assert counts(seller) == before
    tag = name("unicorn")
    for i in range(3):
        product(seller, 10 + i, title=f"{tag} lamp {i}")
    r = seller.get(f"/api/products?q={tag}&limit=2")
    assert r.body["total"] == 3 and len(r.body["products"]) == 2
    r2 = seller.get(f"/api/products?q={tag}&limit=2&offset=2")
    assert len(r2.body["products"]) == 1
    # The LIKE wildcards are taken literally.
    assert seller.get("/api/products?q=%25%25%25zz").body["total"] == 0
    assert seller.get("/api/products?limit=0").status == 400
    assert seller.get("/api/products/999999").status == 404
    assert seller.get("/api/products/abc").status == 404
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    p = seller.post("/api/products", {"title": "with photo", "price": 3, "photo": png})
    assert p.status == 201 and p.body["has_photo"]
    photo = seller.get(f"/api/products/{p.body['id']}/photo")
    assert photo.status == 200 and photo.headers["Content-Type"] == "image/png"


# ---------------------------------------------------------------- trades

def test_purchase_confirm_review_and_every_forbidden_step(market, cluster, name):
    admin = market.admin()
    seller_name, buyer_name = name("seller"), name("buyer")
    seller = member(market, seller_name)
    buyer = member(market, buyer_name, charge=500, admin=admin)
    third = member(market, name(), charge=500, admin=admin)
    item = product(seller, 120)
    seller_addr = seller.get("/api/me").body["member"]["address"]
    buyer_addr = buyer.get("/api/me").body["member"]["address"]

    # Nobody buys their own product, nor names another buyer.
    assert seller.post(f"/api/products/{item['id']}/buy", {}).status == 403
    r = third.post(f"/api/products/{item['id']}/buy", {"buyer": buyer_name})
    assert r.status == 400 and r.code == "invalid_argument"
    assert third.post(f"/api/products/{item['id']}/buy", {"request_id": 7}).status == 400
    assert seller.get(f"/api/products/{item['id']}").body["status"] == "listed"
    # Double submit: two identical requests at once make one trade and one payment.
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(
        buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "r1"}))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in replies) in ([200, 201], [201, 202], [200, 202], [202, 202]), replies
    trade_ids = {r.body["trade_id"] for r in replies}
    assert len(trade_ids) == 1
    trade_id = trade_ids.pop()
    wait_until(lambda: buyer.get(f"/api/trades/{trade_id}").body["status"] == "open")
    # And a third submit, later, still pays nothing more.
    again = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "r2"})
    assert again.status == 200 and again.body["trade_id"] == trade_id and again.body["repeated"]
    wait_until(lambda: balances(cluster, buyer_addr) == [380] * 4)
    escrow = cluster._http(0, "GET", f"/v1/escrows/{trade_id}")
    assert escrow["amount"] == 120 and escrow["status"] == "open" and escrow["seller"] == seller_addr

    # The product is reserved: nobody else can buy it.
    r = third.post(f"/api/products/{item['id']}/buy", {})
    assert r.status == 409 and r.code == "product_reserved"
    # Nobody but the parties sees or moves the trade.
    for path in ("confirm", "cancel", "reclaim", "review"):
        assert third.post(f"/api/trades/{trade_id}/{path}", {"rating": 1, "body": "x"} if path == "review" else {}).status == 403
    assert third.get(f"/api/trades/{trade_id}").status == 403
    # The seller cannot confirm receipt, nor reclaim; the buyer cannot cancel for the seller.
    assert seller.post(f"/api/trades/{trade_id}/confirm").status == 403
    assert seller.post(f"/api/trades/{trade_id}/reclaim").status == 403
    assert buyer.post(f"/api/trades/{trade_id}/cancel").status == 403
    # The deadline is far: no reclaim yet.
    r = buyer.post(f"/api/trades/{trade_id}/reclaim")
    assert r.status == 409 and r.code == "before_deadline"
    # No review before the buyer confirmed.
    assert buyer.post(f"/api/trades/{trade_id}/review", {"rating": 5, "body": "great"}).status == 409
    assert cluster._http(0, "GET", f"/v1/escrows/{trade_id}")["status"] == "open"

    r = buyer.post(f"/api/trades/{trade_id}/confirm")
    assert r.status == 200 and r.body["status"] == "released", r
    wait_until(lambda: balances(cluster, seller_addr) == [120] * 4)
    assert buyer.post(f"/api/trades/{trade_id}/confirm").status == 409
    assert seller.post(f"/api/trades/{trade_id}/cancel").status == 409
    assert seller.get(f"/api/products/{item['id']}").body["status"] == "sold"

    # Reviews: the seller and others cannot write one; bad input is refused; one per trade.
    assert seller.post(f"/api/trades/{trade_id}/review", {"rating": 5, "body": "me!"}).status == 403
    for body in ({"rating": 0, "body": "x"}, {"rating": 6, "body": "x"}, {"rating": 5, "body": ""},
                 {"rating": 5, "body": "x", "stars": 5}):
        assert buyer.post(f"/api/trades/{trade_id}/review", body).status == 400, body
    r = buyer.post(f"/api/trades/{trade_id}/review", {"rating": 4, "body": "as described"})
    assert r.status == 201 and r.body["status"] == "anchored", r
    assert buyer.post(f"/api/trades/{trade_id}/review", {"rating": 1, "body": "changed my mind"}).status == 409

    # The seller's record, read from the chain and verified.
    def profile_verified():
        p = market.client().get(f"/api/sellers/{seller_name}").body
        return p if p["record"]["completed"] == 1 and p["reviews"] and p["reviews"][0]["verified"] else None
    p = wait_until(profile_verified, timeout=30, interval=0.3)
    assert p["record"]["open"] == 0 and p["record"]["refunded"] == 0 and p["record"]["unverified"] == 0
    assert p["record"]["trades"][0]["verified"] and p["record"]["trades"][0]["close"]["verified"]
    # Tampering with the stored review is caught: the text no longer matches the chain.
    import sqlite3
    db = sqlite3.connect(str(market.proc.args[2]))
    db.execute("UPDATE reviews SET body = 'five stars!!' WHERE trade_id = ?", (trade_id,))
    db.commit()
    db.close()
    p = market.client().get(f"/api/sellers/{seller_name}").body
    assert not p["reviews"][0]["verified"] and "does not match" in p["reviews"][0]["reason"]

    # History: each side sees the trade in its own list only.
    assert [t["trade_id"] for t in buyer.get("/api/trades?role=buyer").body["trades"]] == [trade_id]
    assert [t["trade_id"] for t in seller.get("/api/trades?role=seller").body["trades"]] == [trade_id]
    assert third.get("/api/trades?role=buyer").body["trades"] == []
    assert buyer.get("/api/trades?role=admin").status == 400


def test_short_balance_is_refused_before_anything_is_signed(market, name):
    seller = member(market, name())
    buyer = member(market, name(), charge=50)
    item = product(seller, 80)
    r = buyer.post(f"/api/products/{item['id']}/buy", {})
    assert r.status == 409 and r.code == "insufficient_funds"
    assert buyer.get(f"/api/products/{item['id']}").body["status"] == "listed"
    assert buyer.get("/api/trades?role=buyer").body["trades"] == []
    assert buyer.get("/api/me").body["pending_txs"] == []


def test_seller_cancel_refunds_and_relists(market, cluster, name):
    seller = member(market, name())
    buyer = member(market, name(), charge=200)
    item = product(seller, 150)
    buyer_addr = buyer.get("/api/me").body["member"]["address"]
    t = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "first"}).body
    wait_until(lambda: buyer.get(f"/api/trades/{t['trade_id']}").body["status"] == "open")
    r = seller.post(f"/api/trades/{t['trade_id']}/cancel")
    assert r.status == 200 and r.body["status"] == "refunded", r
    wait_until(lambda: balances(cluster, buyer_addr) == [200] * 4)
    assert seller.get(f"/api/products/{item['id']}").body["status"] == "listed"
    # A refunded trade cannot be reviewed, and the product can be bought again (new trade id).
    assert buyer.post(f"/api/trades/{t['trade_id']}/review", {"rating": 1, "body": "x"}).status == 409
    # The first request, retried late, gets its outcome back instead of paying again...
    late = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "first"})
    assert late.status == 200 and late.body["trade_id"] == t["trade_id"]
    assert late.body["status"] == "refunded" and late.body["repeated"]
    assert balances(cluster, buyer_addr) == [200] * 4
    # ...while a new request is a new purchase, under a new trade id.
    t2 = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "second"})
    assert t2.status in (201, 202) and t2.body["trade_id"] != t["trade_id"]
    wait_until(lambda: balances(cluster, buyer_addr) == [50] * 4)


def test_buyer_reclaims_after_the_deadline(cluster, tmp_path, name):
    m = Market(cluster, tmp_path / "short", escrow_blocks=2)
    try:
        seller = member(m, name())
        buyer = member(m, name(), charge=100)
        item = product(seller, 60)
        t = buyer.post(f"/api/products/{item['id']}/buy", {}).body
        wait_until(lambda: buyer.get(f"/api/trades/{t['trade_id']}").body["status"] == "open")
        # Blocks pass (other traffic on the chain).
        for _ in range(4):
            cluster.transfer("w0", cluster.address("w0"), 1)
        assert seller.post(f"/api/trades/{t['trade_id']}/reclaim").status == 403
        r = buyer.post(f"/api/trades/{t['trade_id']}/reclaim")
        assert r.status == 200 and r.body["status"] == "refunded", r
        assert buyer.get("/api/me").body["balance"] == 100
    finally:
        m.close()


# ---------------------------------------------------------------- crashes

def test_node_crash_during_purchase_pays_once(cluster, tmp_path, name):
    """Node 0 (the primary, and the node popmarket asks first) is killed while popmarket
    waits on it for the purchase to commit: two other nodes are frozen so that it cannot
    commit before the crash. popmarket moves on to the next node with the same signed
    transaction; the others elect a new primary and commit it. The purchase ends committed
    exactly once, or not at all, and the API says which."""
    m = Market(cluster, tmp_path / "crash", node_timeout_ms=1000, submit_timeout_ms=4000)
    try:
        seller = member(m, name())
        buyer = member(m, name(), charge=300)
        item = product(seller, 100)
        buyer_addr = buyer.get("/api/me").body["member"]["address"]
        result = {}
        for i in (1, 2):
            cluster.pause(i)
        try:
            t = threading.Thread(target=lambda: result.update(
                r=buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "x"})))
            t.start()
            # The transaction is stored, sent to node 0 and waiting there (no quorum).
            wait_until(lambda: buyer.get("/api/trades?role=buyer").body["trades"], 10, 0.05)
            time.sleep(0.5)
            cluster.kill(0)
        finally:
            for i in (1, 2):
                cluster.resume(i)
        t.join()
        r = result["r"]
        print(f"purchase during the crash answered {r.status} ({r.body.get('status')})")
        assert r.status in (201, 202), r
        trade_id = r.body["trade_id"]
        # 201: committed; 202: not yet -- the trade says "opening" and settles later.
        assert r.body["committed"] == (r.status == 201)
        assert r.body["status"] == ("open" if r.status == 201 else "opening")
        # A retry of the same purchase returns the same trade.
        again = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "x"})
        assert again.body["trade_id"] == trade_id
        final = wait_until(lambda: buyer.get(f"/api/trades/{trade_id}").body["status"]
                           in ("open", "failed") and buyer.get(f"/api/trades/{trade_id}").body, 60)
        print(f"the trade settled as {final['status']}")
        live = [i for i in cluster.nodes() if cluster.pid(i)]
        if final["status"] == "open":
            wait_until(lambda: balances(cluster, buyer_addr) == [200] * len(live), 30)
        else:
            assert balances(cluster, buyer_addr) == [300] * len(live)
        cluster.restart(0)
        cluster.wait_converged(timeout=60)
        expected = 200 if final["status"] == "open" else 300
        wait_until(lambda: balances(cluster, buyer_addr) == [expected] * 4, 60)
        escrow = cluster._http(1, "GET", f"/v1/escrows/{trade_id}")
        assert escrow["amount"] == 100 and escrow["status"] == "open"
    finally:
        for i in cluster.nodes():
            if cluster.pid(i) is None:
                cluster.restart(i)
                break
        m.close()


def test_chain_unreachable_purchase_is_pending_then_commits_once(cluster, tmp_path, name):
    """Three of four nodes frozen (no quorum): the purchase cannot commit, so the API answers
    202 with the trade "opening" and the product reserved; once the nodes come back the
    stored transaction is resent and commits once."""
    m = Market(cluster, tmp_path / "frozen", node_timeout_ms=500, submit_timeout_ms=1000,
               settle_interval_ms=300)
    try:
        seller = member(m, name())
        buyer = member(m, name(), charge=300)
        item = product(seller, 100)
        buyer_addr = buyer.get("/api/me").body["member"]["address"]
        frozen = [0, 1, 2]
        for i in frozen:
            cluster.pause(i)
        try:
            r = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "y"})
            assert buyer.get(f"/api/products/{item['id']}").body["status"] == "reserved"
        finally:
            for i in frozen:
                cluster.resume(i)
        assert r.status == 202 and r.body["status"] == "opening" and not r.body["committed"], r
        trade_id = r.body["trade_id"]
        final = wait_until(lambda: buyer.get(f"/api/trades/{trade_id}").body["status"] == "open", 60)
        assert final
        wait_until(lambda: balances(cluster, buyer_addr) == [200] * 4, 30)
        # A retry after the commit does not pay again.
        again = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": "y"})
        assert again.status == 200 and again.body["trade_id"] == trade_id
        time.sleep(0.5)
        assert balances(cluster, buyer_addr) == [200] * 4
    finally:
        m.close()


def test_explorer_verifies_blocks_and_transactions(market, cluster, name):
    c = member(market, name(), charge=10)
    charge = c.get("/api/charges").body["charges"][0]
    tx = wait_until(lambda: (lambda r: r.body if r.status == 200 and r.body["verified"] else None)(
        c.get(f"/api/chain/txs/{charge['txid']}")), 30, 0.3)
    assert tx["tx"]["kind"] == "mint" and tx["tx"]["amount"] == 10
    b = c.get(f"/api/chain/blocks/{tx['height']}").body
    assert b["verified"] and b["block"]["hash"] == tx["block_hash"]
    # What the page needs for its own check: the block's header, the headers up to a stable
    # checkpoint and that checkpoint's certificate (at least a quorum of 4's 3 signatures).
    assert tx["header"] == b["block"]["header"] and tx["header"]["height"] == tx["height"]
    proof = tx["commit_proof"]
    assert tx["replica_set"] == "genesis" and b["commit_proof"] == proof
    cps = proof["certificate"]["checkpoints"]
    top = proof["headers"][-1] if proof["headers"] else tx["header"]
    assert len({cp["replica"] for cp in cps}) >= 3
    assert all(cp["seq"] == top["height"] and cp["block_hash"] == top["hash"] for cp in cps)
    blocks = c.get("/api/chain/blocks?limit=5").body["blocks"]
    assert blocks and blocks[0]["height"] >= tx["height"]
    certified = [x for x in blocks if x["verified"]]
    assert all("header" in x and "commit_proof" in x for x in certified)
    addr = c.get("/api/me").body["member"]["address"]
    a = c.get(f"/api/chain/addresses/{addr}").body
    assert a["balance"] == 10 and a["txs"][0]["kind"] == "mint"
    assert c.get("/api/chain/txs/xyz").status == 400
    assert c.get("/api/chain/txs/" + "0" * 64).status == 404
    assert c.get("/api/chain/addresses/popnope").status == 400
    status = c.get("/api/chain/status").body
    assert len(status["nodes"]) == 4


def test_trust_root_is_the_genesis_set(market, cluster):
    """The set the page checks certificates against: the genesis file's, fixed at start, with
    the fingerprint `popmarket --print-trust-root` computes from the genesis file."""
    genesis = json.loads((cluster.dir / "genesis.json").read_text())
    root = market.client().get("/api/chain/trust-root").body
    assert root["replicas"] == [{"id": r["id"], "public_key": r["public_key"]}
                                for r in genesis["replicas"]]
    assert root["chain_id"] == genesis["chain_id"]
    printed = json.loads(subprocess.run(
        [find_popmarket(), "--print-trust-root", str(cluster.dir / "genesis.json")],
        check=True, capture_output=True, text=True).stdout)
    assert printed == root and len(root["fingerprint"]) == 64


def test_verification_follows_a_membership_change(tmp_path, name):
    """Two replicas join by `config`, two of the genesis replicas go down: every later
    certificate is signed by a quorum that the genesis set alone does not make, and a charge
    committed after the change still shows as verified (popmarket learnt the new set from the
    config blocks' own proofs)."""
    import popchain
    cluster = popchain.LocalCluster(nodes=4, wallets=1)
    cluster.start()
    m = None
    try:
        joined = [cluster.add_node(), cluster.add_node()]
        # The change takes effect at the next checkpoint boundary: commit blocks past it.
        past = cluster.height(0) + cluster.status(0)["checkpoint_interval"]
        deadline = time.monotonic() + 120
        while cluster.height(0) <= past or not all(cluster.status(i)["voting"] for i in joined):
            assert time.monotonic() < deadline, [cluster.status(i) for i in joined]
            cluster.transfer("w0", cluster.address("w0"), 1)
        cluster.kill(2)
        cluster.kill(3)
        m = Market(cluster, tmp_path / "membership", nodes=[0, 1])
        c = member(m, name(), charge=7)
        charge = c.get("/api/charges").body["charges"][0]
        tx = wait_until(lambda: (lambda r: r.body if r.status == 200 and r.body["verified"]
                                 else None)(c.get(f"/api/chain/txs/{charge['txid']}")), 60, 0.3)
        assert tx["tx"]["kind"] == "mint" and tx["tx"]["amount"] == 7
        b = c.get(f"/api/chain/blocks/{tx['height']}").body
        assert b["verified"], b
        # The page checks against the genesis set only: the answer says the set changed.
        assert tx["replica_set"] == "changed" and b["replica_set"] == "changed"
    finally:
        if m:
            m.close()
        cluster.close()


# ---------------------------------------------------------------- trade ids

def old_trade_id(seller_address, product_id, created_at, listing_round):
    """The trade id popmarket used to derive from public data alone (popmarket/trade/v1)."""
    import hashlib
    text = f"popmarket/trade/v1|{seller_address}|{product_id}|{created_at}|{listing_round}"
    return hashlib.sha256(text.encode()).hexdigest()


def test_trade_ids_cannot_be_taken_first_from_public_data(market, cluster, name):
    """Any wallet on the chain opens a 1-coin escrow under each trade id a purchase could get
    from what the API shows anyone (seller, product, its creation time, listing rounds): the
    buyer's purchases must still go through, under ids nobody could have computed."""
    import popchain
    seller = member(market, name())
    buyer = member(market, name(), charge=500)
    item = product(seller, 100)
    public = market.client().get(f"/api/products/{item['id']}").body
    squatted = set()
    for listing_round in range(3):
        tid = old_trade_id(public["seller_address"], public["id"], public["created_at"],
                           listing_round)
        tx = cluster.wallet("w0").escrow_open(
            cluster.chain_id, cluster.next_nonce("w0"),
            popchain.Address.parse(public["seller_address"]), 1, popchain.Hash256.from_hex(tid),
            cluster.height(0) + 1000)
        cluster.submit(tx, wait=True)
        assert cluster._http(0, "GET", f"/v1/escrows/{tid}")["status"] == "open"
        squatted.add(tid)
    for attempt in range(2):
        r = buyer.post(f"/api/products/{item['id']}/buy", {"request_id": f"a{attempt}"})
        assert r.status in (201, 202), r
        tid = r.body["trade_id"]
        assert tid not in squatted
        wait_until(lambda: buyer.get(f"/api/trades/{tid}").body["status"] == "open")
        if attempt == 0:
            # Refunded: the product is listed again (next listing round), bought again.
            assert seller.post(f"/api/trades/{tid}/cancel").status == 200
    escrow = cluster._http(0, "GET", f"/v1/escrows/{tid}")
    assert escrow["amount"] == 100 and escrow["status"] == "open"


def test_identical_purchases_get_different_trade_ids(cluster, tmp_path, name):
    """Two popmarkets on copies of one database (same buyer, seller, product, listing round,
    same time of creation): the same purchase on each gets its own trade id, and both pay."""
    import shutil
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    m = Market(cluster, a_dir, auto_approve_limit=1000)
    try:
        seller = member(m, name())
        buyer = m.client()
        buyer.signup(name())
        assert buyer.post("/api/charges", {"amount": 500}).body["status"] == "approved"
        buyer_address = buyer.get("/api/me").body["member"]["address"]
        item = product(seller, 100)
    finally:
        m.close()
    b_dir.mkdir()
    for f in a_dir.glob("market.db*"):
        shutil.copy(f, b_dir / f.name)
    a, b = Market(cluster, a_dir), Market(cluster, b_dir)
    try:
        ids = []
        for m in (a, b):
            c = m.client()
            c.cookie, c.csrf = buyer.cookie, buyer.csrf
            r = c.post(f"/api/products/{item['id']}/buy", {"request_id": "same"})
            assert r.status == 201, r
            ids.append(r.body["trade_id"])
        assert ids[0] != ids[1]
        for tid in ids:
            escrow = cluster._http(0, "GET", f"/v1/escrows/{tid}")
            assert escrow["status"] == "open" and escrow["amount"] == 100
        wait_until(lambda: balances(cluster, buyer_address) == [300] * 4)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- text lengths

def test_text_limits_count_characters_not_bytes(market, name):
    seller = member(market, name())
    for title in ("é" * 100, "€" * 100, "😀" * 100, "a" * 99 + "é"):
        r = seller.post("/api/products", {"title": title, "description": "ü" * 2000, "price": 5})
        assert r.status == 201, (title, r)
        assert r.body["title"] == title and len(r.body["description"]) == 2000
    before = counts(seller)
    for body in ({"title": "é" * 101, "price": 5}, {"title": "😀" * 101, "price": 5},
                 {"title": "x", "description": "ü" * 2001, "price": 5}):
        r = seller.post("/api/products", body)
        assert r.status == 400 and "characters" in r.body["error"]["message"], (body, r)
    # Text that is not UTF-8 (a lone byte, a lone surrogate) is refused too.
    for raw in (b'{"title": "caf\xe9", "price": 5}', b'{"title": "\\ud800", "price": 5}',
                b'{"title": "\xc3\xa9\xc3", "price": 5}'):
        assert seller.post("/api/products", raw=raw).status == 400, raw
    assert counts(seller) == before
    from urllib.parse import quote
    assert seller.get("/api/products?q=" + quote("é" * 100)).status == 200
    assert seller.get("/api/products?q=" + quote("é" * 101)).status == 400


# ---------------------------------------------------------------- look-alike usernames

def test_usernames_are_unique_without_case(market, name):
    for look_alike in ("ADMIN", "Admin", "aDmIn"):
        r = market.client().post("/api/signup", {"username": look_alike, "password": PASSWORD})
        assert r.status == 409 and r.code == "username_taken", (look_alike, r)
        assert '"admin"' in r.body["error"]["message"]
    alice = name("alice")
    market.client().signup(alice)
    for look_alike in (alice.upper(), alice.capitalize()):
        r = market.client().post("/api/signup", {"username": look_alike, "password": PASSWORD})
        assert r.status == 409 and r.code == "username_taken", r
    # Log-in takes the name in any case, and the session carries the stored spelling.
    r = market.client().login(alice.upper(), PASSWORD)
    assert r.status == 200 and r.body["member"]["username"] == alice
    assert market.client().login(alice.upper(), "wrong password").status == 401
    r = market.client().login("ADMIN", Market.ADMIN_PASSWORD)
    assert r.status == 200 and r.body["member"]["username"] == "admin" and r.body["member"]["is_admin"]


def test_look_alike_names_in_an_older_database(cluster, tmp_path, name):
    """A database from before the rule, holding two names that differ only in case: popmarket
    still starts (and says so), each member logs in with its exact spelling, and no further
    look-alike can sign up."""
    import sqlite3
    work = tmp_path / "old"
    m = Market(cluster, work)
    bob, carol = name("bob"), name("carol")
    try:
        m.client().signup(bob)
        m.client().signup(carol, "carol's password")
    finally:
        m.close()
    db = sqlite3.connect(str(work / "market.db"))
    db.execute("DROP INDEX IF EXISTS members_username_nocase")
    db.execute("UPDATE members SET username = ? WHERE username = ?", (bob.upper(), carol))
    db.commit()
    db.close()
    m = Market(cluster, work)
    try:
        r = m.client().login(bob.upper(), "carol's password")
        assert r.status == 200 and r.body["member"]["username"] == bob.upper()
        r = m.client().login(bob, PASSWORD)
        assert r.status == 200 and r.body["member"]["username"] == bob
        r = m.client().post("/api/signup", {"username": bob.capitalize(), "password": PASSWORD})
        assert r.status == 409 and r.code == "username_taken"
    finally:
        m.close()
    assert "differ only in letter case" in (work / "popmarket.log").read_text()


# ---------------------------------------------------------------- command line

def test_bad_options_are_named_with_their_range(cluster, tmp_path):
    base = [find_popmarket(), "--db", str(tmp_path / "x.db"), "--listen", "127.0.0.1:1",
            "--genesis", str(cluster.dir / "genesis.json"), "--node", "127.0.0.1:1",
            "--admin", "admin"]
    for option, value, expected in (("escrow-blocks", "0", "1 to 1000000000"),
                                    ("workers", "0", "1 to 64"),
                                    ("workers", "65", "1 to 64"),
                                    ("auto-approve-limit", "-5", "0 to 1000000"),
                                    ("node-timeout-ms", "soon", "1 to 3600000"),
                                    ("settle-interval-ms", "0", "1 to 3600000"),
                                    ("chain-workers", "0", "1 to 64"),
                                    ("chain-requests-per-member", "65", "1 to 64"),
                                    ("commit-wait-ms", "25001", "1 to 25000")):
        r = subprocess.run(base + ["--" + option, value], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2, (option, value, r)
        assert f"--{option}" in r.stderr and expected in r.stderr and value in r.stderr, r.stderr
    r = subprocess.run(base[:-2], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--admin is required" in r.stderr
    r = subprocess.run(base + ["--workers"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--workers needs a value" in r.stderr


# ---------------------------------------------------------------- a chain without quorum

def test_chain_without_quorum_keeps_the_service_answering(cluster, tmp_path, name):
    """Two of four nodes killed (no quorum: nothing can commit). One member fires more
    purchases at once than popmarket has request threads (4, the default), while the chain
    cannot commit any of them. Requests that do not write to the chain (the product list, a
    log-in, the session, the member's own page, the web UI, the chain status) must still
    answer within 2 s; the purchases get clear answers at once or within the commit wait
    (one pending payment per member at most, the rest "nothing was done"); a third member is
    told the chain is busy. Once the nodes return, the pending payments commit once and the
    service's records agree with the chain."""
    m = Market(cluster, tmp_path / "busy")  # defaults: --workers 4
    killed = [2, 3]
    try:
        admin = m.admin()
        seller = member(m, name("seller"))
        buyers = [member(m, name("buyer"), charge=1000, admin=admin) for _ in range(3)]
        addresses = [b.get("/api/me").body["member"]["address"] for b in buyers]
        items = [product(seller, 100, f"Lamp {k}")["id"] for k in range(10)]
        reader_name = name("reader")
        m.client().signup(reader_name)
        for i in killed:
            cluster.kill(i)

        replies = {}
        started = {}

        def buy(who, k):
            started[(who, k)] = time.monotonic()
            try:
                r = buyers[who].post(f"/api/products/{items[k]}/buy", {"request_id": f"b{k}"},
                                     timeout=90)
            except Exception as e:  # a timeout is a failure of the test, reported below
                r = e
            replies[(who, k)] = (r, time.monotonic() - started[(who, k)])

        def fire(who, ks):
            threads = [threading.Thread(target=buy, args=(who, k), daemon=True) for k in ks]
            for t in threads:
                t.start()
            return threads

        # Member 0: six purchases at once, more than the four request threads.
        threads = fire(0, range(6))
        time.sleep(0.5)

        def read_only_answers_quickly():
            reader = m.client()
            checks = [("GET /api/products", lambda: reader.get("/api/products?limit=5", timeout=2)),
                      ("POST /api/login", lambda: reader.post(
                          "/api/login", {"username": reader_name, "password": PASSWORD},
                          timeout=2)),
                      ("GET /api/session", lambda: reader.get("/api/session", timeout=2)),
                      ("GET /", lambda: reader.get("/", timeout=2)),
                      ("GET /api/me", lambda: buyers[0].get("/api/me", timeout=2)),
                      ("GET /api/chain/status", lambda: reader.get("/api/chain/status", timeout=2))]
            for what, call in checks:
                t0 = time.monotonic()
                try:
                    r = call()
                except Exception as e:
                    pytest.fail(f"{what} did not answer within 2 s while chain writes wait: {e!r}")
                elapsed = time.monotonic() - t0
                assert r.status == 200, (what, r)
                assert elapsed < 2, f"{what} took {elapsed:.1f} s"

        read_only_answers_quickly()
        # The purchases over member 0's limit are answered at once, with nothing done.
        wait_until(lambda: sum(1 for (w, _) in replies if w == 0) >= 4, 5, 0.05)
        # Member 1: two purchases; with member 0's two, every chain thread is taken...
        threads += fire(1, range(6, 8))
        time.sleep(0.5)
        read_only_answers_quickly()
        # ...so member 2, who has nothing waiting, is told the chain is busy, at once.
        t0 = time.monotonic()
        r = buyers[2].post(f"/api/products/{items[8]}/buy", {"request_id": "c"}, timeout=5)
        assert time.monotonic() - t0 < 2
        assert r.status == 503 and r.code == "chain_busy", r
        assert "nothing was done" in r.body["error"]["message"], r
        assert r.headers.get("Retry-After"), r.headers
        read_only_answers_quickly()

        for t in threads:
            t.join(90)
        assert len(replies) == 8, replies
        pending = {}
        for (who, k), (r, elapsed) in sorted(replies.items()):
            assert not isinstance(r, Exception), ((who, k), r)
            print(f"member {who} purchase {k}: {r.status} {r.code or r.body.get('status')} "
                  f"after {elapsed:.1f} s")
            # Every purchase is answered well before an HTTP client would give up.
            assert elapsed < 30, ((who, k), elapsed, r)
            if r.status == 202:
                # Signed, stored and sent: pending, never reported as not done.
                assert r.body["status"] == "opening" and not r.body["committed"], r
                pending.setdefault(who, []).append((k, r.body["trade_id"]))
            else:
                assert (r.status, r.code) in ((429, "too_many_chain_requests"),
                                              (409, "previous_tx_pending")), r
                assert "nothing was done" in r.body["error"]["message"], r
        # At most one payment per member can wait (its nonce comes first), and one does.
        assert sorted(pending) == [0, 1] and all(len(v) == 1 for v in pending.values()), pending
        pending = {who: v[0] for who, v in pending.items()}
        rate_limited = [r for (w, _), (r, _) in replies.items() if w == 0 and r.status == 429]
        assert len(rate_limited) >= 4, replies
        assert all(r.headers.get("Retry-After") for r in rate_limited)
        # Only the pending purchases reserved their products; nothing else was written.
        for who in (0, 1):
            k, trade_id = pending[who]
            trades = buyers[who].get("/api/trades?role=buyer").body["trades"]
            assert [t["trade_id"] for t in trades] == [trade_id], trades
            assert trades[0]["status"] == "opening"
            assert len(buyers[who].get("/api/me", timeout=2).body["pending_txs"]) == 1
        reserved = {pending[0][0], pending[1][0]}
        for k, item in enumerate(items):
            status = seller.get(f"/api/products/{item}").body["status"]
            assert status == ("reserved" if k in reserved else "listed"), (k, status)
        assert buyers[2].get("/api/trades?role=buyer").body["trades"] == []
        assert buyers[2].get("/api/me").body["pending_txs"] == []

        # The nodes return: each pending payment commits once, and the records agree.
        for i in killed:
            cluster.restart(i)
        cluster.wait_converged(timeout=60)
        for who in (0, 1):
            trade_id = pending[who][1]
            wait_until(lambda: buyers[who].get(f"/api/trades/{trade_id}").body["status"] == "open",
                       60, 0.3)
            wait_until(lambda: balances(cluster, addresses[who]) == [900] * 4, 60)
            me = buyers[who].get("/api/me").body
            assert me["balance"] == 900 and me["in_escrow"] == 100 and me["pending_txs"] == [], me
            escrow = cluster._http(0, "GET", f"/v1/escrows/{trade_id}")
            assert escrow["amount"] == 100 and escrow["status"] == "open", escrow
        assert balances(cluster, addresses[2]) == [1000] * 4
        time.sleep(1)  # a late resend must not pay twice
        for who in (0, 1):
            assert balances(cluster, addresses[who]) == [900] * 4
        # And the service works as before: a purchase commits, a confirmation pays the seller.
        r = buyers[2].post(f"/api/products/{items[9]}/buy", {"request_id": "d"})
        assert r.status == 201 and r.body["status"] == "open", r
        r = buyers[0].post(f"/api/trades/{pending[0][1]}/confirm")
        assert r.status == 200 and r.body["status"] == "released", r
        seller_addr = seller.get("/api/me").body["member"]["address"]
        wait_until(lambda: balances(cluster, seller_addr) == [100] * 4, 30)
        wait_until(lambda: balances(cluster, addresses[2]) == [900] * 4, 30)
    finally:
        for i in killed:
            if cluster.pid(i) is None:
                cluster.restart(i)
        m.close()


def test_a_hung_node_costs_one_read_timeout_then_only_a_short_probe(cluster, tmp_path, name):
    """A node that takes connections but never answers (SIGSTOP). The pages that ask every
    node (the chain status, a member's balance by node) pay the read timeout once; after
    that the hung node is a suspect, asked for at most a short probe, and shown as not up.
    Once it answers again it is up again."""
    m = Market(cluster, tmp_path / "hung", node_timeout_ms=2000)
    hung = 1
    hung_node = f"127.0.0.1:{cluster.api_port(hung)}"
    try:
        reader = m.client()
        buyer = member(m, name("buyer"))

        def status():
            t0 = time.monotonic()
            r = reader.get("/api/chain/status", timeout=10)
            assert r.status == 200, r
            return {n["node"]: n["up"] for n in r.body["nodes"]}, time.monotonic() - t0

        up, _ = status()
        assert all(up.values()), up
        cluster.pause(hung)
        try:
            up, first = status()
            assert up[hung_node] is False and sum(up.values()) == len(up) - 1, up
            for _ in range(4):
                up, elapsed = status()
                assert up[hung_node] is False, up
                assert elapsed < 1.0, f"chain status took {elapsed:.2f} s with a hung node"
                t0 = time.monotonic()
                me = buyer.get("/api/me", timeout=10)
                elapsed = time.monotonic() - t0
                assert me.status == 200 and elapsed < 1.0, (me, elapsed)
                by_node = {n["node"]: n["balance"] for n in me.body["balance_by_node"]}
                assert by_node[hung_node] is None, by_node
                # Reads of the chain go to the nodes that answer.
                t0 = time.monotonic()
                assert reader.get("/api/chain/blocks", timeout=10).status == 200
                assert time.monotonic() - t0 < 1.0
            print(f"first status with the hung node: {first:.2f} s")
        finally:
            cluster.resume(hung)
        wait_until(lambda: all(status()[0].values()), 15, 0.2)
    finally:
        m.close()
