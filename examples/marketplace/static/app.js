// POP Market's web UI: one page, hash routes, the JSON API of popmarket. Every piece of text
// that came from a user is inserted as text, never as HTML.
'use strict';

const state = { member: null, csrf: null };

// ---- helpers -------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') {
    opts.headers['Content-Type'] = 'application/json';
    if (state.csrf) opts.headers['X-CSRF-Token'] = state.csrf;
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const err = new Error((data && data.error && data.error.message) || `HTTP ${r.status}`);
    err.status = r.status;
    err.code = data && data.error && data.error.code;
    err.data = data;
    throw err;
  }
  return { status: r.status, data };
}

function flash(text, isError) {
  const box = document.getElementById('flash');
  box.replaceChildren(h('div', { class: 'msg' + (isError ? ' error' : ''), 'data-testid': 'flash' }, text));
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => box.replaceChildren(), 6000);
}

function render(...nodes) { document.getElementById('main').replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false)); }
// Pages draw through the `show` their route gave them: a page still loading when the user
// has moved on must not draw over the newer one.
let routeSeq = 0;
function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }
function short(s, n = 10) { return s && s.length > 2 * n ? `${s.slice(0, n)}…${s.slice(-6)}` : s; }
function when(ms) { return ms ? new Date(ms).toLocaleString() : ''; }
// Block times are the proposer's clock, which on a local testnet counts from the node's start.
function blockTime(ms) { return ms > 1e12 ? when(ms) : `proposer clock +${(ms / 1000).toFixed(1)} s`; }
function coins(n) { return n === null || n === undefined ? '—' : `${Number(n).toLocaleString()} POP`; }

// The server's verdict alone: never "verified", which needs the browser's check too
// (verdictBadge below).
function badge(verified, reason) {
  if (verified) return h('span', { class: 'badge warn', title: 'checked by the market only', 'data-browser': 'unchecked' }, 'unverified by browser');
  return h('span', { class: 'badge warn', title: reason || '' }, reason && reason.startsWith('not certified') ? 'awaiting certificate' : 'unverified');
}

// The browser's own check (static/verify.js) against the replica set fixed at popmarket's
// start. A badge reads "verified" only when popmarket's check passed AND this one did.
let trustRootPromise = null;
function trustRoot() {
  if (!trustRootPromise) {
    trustRootPromise = api('GET', '/api/chain/trust-root').then((r) => r.data);
    trustRootPromise.catch(() => { trustRootPromise = null; });
  }
  return trustRootPromise;
}
const browserCanCheck = () => typeof crypto !== 'undefined' && !!crypto.subtle;
const noWebCrypto = { ok: false, kind: 'no-webcrypto', reason: 'WebCrypto is unavailable (the page is not served over https or from localhost)' };
async function browserCheck(fn, answer) {
  if (!browserCanCheck()) return noWebCrypto;
  try { return await fn(answer, await trustRoot()); } catch (e) { return { ok: false, kind: 'no-trust-root', reason: `no trust root: ${e.message}` }; }
}
// The badge for a server verdict (verified, reason, replica_set hint) and the browser's result.
function verdictBadge(serverVerified, serverReason, result, replicaSet) {
  if (!serverVerified) return badge(false, serverReason);
  if (result.ok) {
    return h('span', { class: 'badge ok', title: 'checked by the market and in this browser: Merkle proof, headers and a quorum of the genesis replica set\'s signatures', 'data-testid': 'verified', 'data-browser': 'verified' }, '✓ verified');
  }
  if (result.kind === 'merkle') return h('span', { class: 'badge bad', title: result.reason, 'data-browser': 'mismatch' }, '✗ proof mismatch');
  // Not checkable here (set changed since genesis, no WebCrypto): neither verified nor forged.
  if ((result.kind === 'membership' && replicaSet === 'changed') || ['no-webcrypto', 'no-trust-root', 'uncertified'].includes(result.kind)) {
    const why = result.kind === 'membership' ? `the replica set changed since genesis; this page checks against the genesis set only (${result.reason})` : result.reason;
    return h('span', { class: 'badge warn', title: why, 'data-browser': 'unchecked' }, 'unverified by browser');
  }
  return h('span', { class: 'badge bad', title: result.reason, 'data-browser': 'invalid' }, '✗ certificate invalid');
}
async function checkBadge(check) {
  if (!check || !check.found) return h('span', { class: 'badge warn' }, 'pending');
  if (!check.verified) return badge(false, check.reason);
  return verdictBadge(true, '', await browserCheck(verifyTxAnswer, check), check.replica_set);
}
const isVerified = (b) => b.dataset.browser === 'verified';

function statusBadge(status) {
  const cls = { open: 'warn', opening: 'warn', releasing: 'warn', refunding: 'warn', released: 'ok', refunded: '', failed: 'bad',
    listed: 'ok', reserved: 'warn', sold: '', requested: 'warn', approving: 'warn', approved: 'ok', rejected: 'bad' }[status];
  const label = { opening: 'paying… (pending)', releasing: 'confirming… (pending)', refunding: 'refunding… (pending)',
    open: 'paid, in escrow', released: 'completed', approving: 'minting… (pending)' }[status] || status;
  return h('span', { class: 'badge ' + (cls || ''), 'data-status': status }, label);
}

function form(fields, submitLabel, onSubmit, testid) {
  const f = h('form', { class: 'stack', 'data-testid': testid });
  for (const fl of fields) f.append(fl);
  const btn = h('button', { type: 'submit' }, submitLabel);
  f.append(btn);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    btn.disabled = true;
    try { await onSubmit(new FormData(f)); } catch (e) { flash(e.message, true); } finally { btn.disabled = false; }
  });
  return f;
}
function input(label, name, attrs) { return h('label', {}, label, h('input', Object.assign({ name }, attrs || {}))); }

function requireLogin(show) {
  if (state.member) return true;
  show(h('div', { class: 'card' }, h('p', {}, 'Please ', h('a', { href: '#/login' }, 'log in'), ' or ', h('a', { href: '#/signup' }, 'sign up'), ' first.')));
  return false;
}

// ---- navigation ----------------------------------------------------------------------------
function renderNav() {
  const nav = document.getElementById('nav');
  const links = [h('a', { href: '#/' }, 'Products'), h('a', { href: '#/explorer' }, 'Explorer')];
  const right = h('span', { class: 'right' });
  if (state.member) {
    links.push(h('a', { href: '#/sell' }, 'Sell'), h('a', { href: '#/wallet' }, 'Wallet'), h('a', { href: '#/me' }, 'My page'));
    if (state.member.is_admin) links.push(h('a', { href: '#/admin', 'data-testid': 'nav-admin' }, 'Charge queue'));
    right.append(h('span', { class: 'muted', 'data-testid': 'whoami' }, state.member.username),
      h('button', { class: 'secondary', onclick: logout }, 'Log out'));
  } else {
    right.append(h('a', { href: '#/login' }, 'Log in'), h('a', { href: '#/signup' }, 'Sign up'));
  }
  nav.replaceChildren(...links, right);
}

async function refreshSession() {
  const { data } = await api('GET', '/api/session');
  state.member = data.member;
  state.csrf = data.csrf || null;
  renderNav();
}

async function logout() {
  try { await api('POST', '/api/logout'); } catch (e) { /* the session is gone either way */ }
  state.member = null; state.csrf = null;
  renderNav();
  go('#/');
}

// ---- pages ---------------------------------------------------------------------------------
async function pageProducts(show, params) {
  const q = params.get('q') || '';
  const offset = Number(params.get('offset') || 0);
  const limit = 12;
  const { data } = await api('GET', `/api/products?limit=${limit}&offset=${offset}&q=${encodeURIComponent(q)}`);
  const search = h('form', { class: 'row search', onsubmit: (e) => { e.preventDefault(); go(`#/?q=${encodeURIComponent(e.target.q.value)}`); } },
    h('input', { name: 'q', value: q, placeholder: 'Search titles and descriptions', 'aria-label': 'search' }), h('button', { type: 'submit' }, 'Search'));
  const grid = h('div', { class: 'grid', 'data-testid': 'product-grid' });
  for (const p of data.products) {
    grid.append(h('a', { class: 'card product', href: `#/product/${p.id}`, 'data-testid': 'product-card' },
      p.has_photo ? h('img', { class: 'thumb', src: `/api/products/${p.id}/photo`, alt: '' }) : h('div', { class: 'thumb' }, 'no photo'),
      h('strong', {}, p.title), h('div', { class: 'row' }, h('span', { class: 'price' }, coins(p.price)), statusBadge(p.status)),
      h('span', { class: 'muted' }, 'by ', p.seller)));
  }
  const pager = h('div', { class: 'pager' },
    h('button', { class: 'secondary', disabled: offset === 0, onclick: () => go(`#/?q=${encodeURIComponent(q)}&offset=${Math.max(0, offset - limit)}`) }, '← Newer'),
    h('span', { class: 'muted' }, data.total ? `${offset + 1}–${Math.min(offset + limit, data.total)} of ${data.total}` : 'nothing here yet'),
    h('button', { class: 'secondary', disabled: offset + limit >= data.total, onclick: () => go(`#/?q=${encodeURIComponent(q)}&offset=${offset + limit}`) }, 'Older →'));
  show(h('h1', {}, 'Products'), search, grid, pager);
}

async function pageProduct(show, id) {
  const { data: p } = await api('GET', `/api/products/${id}`);
  const actions = h('div', { class: 'stack' });
  const trust = h('div', { class: 'card' }, h('p', { class: 'muted' }, 'Reading the seller\'s record from the chain…'));
  const mine = state.member && state.member.username === p.seller;
  if (p.my_trade) {
    actions.append(h('p', {}, 'Your trade: ', statusBadge(p.my_trade.status), ' ', h('a', { href: `#/trade/${p.my_trade.trade_id}` }, 'details')));
  }
  if (!state.member) {
    actions.append(h('p', {}, h('a', { href: '#/login' }, 'Log in'), ' to buy.'));
  } else if (!mine && p.status === 'listed') {
    const me = (await api('GET', '/api/me')).data;
    const enough = me.balance !== null && me.balance >= p.price;
    actions.append(h('p', {}, 'Your balance: ', h('strong', {}, coins(me.balance))));
    if (!enough) {
      actions.append(h('p', { class: 'badge warn' }, 'Your balance is short of the price.'),
        h('a', { href: `#/wallet?amount=${p.price - (me.balance || 0)}` }, 'Request a charge'));
    }
    // One id per click: a retry after a timeout sends the same purchase, never a second one.
    const requestId = crypto.getRandomValues(new Uint32Array(4)).join('-');
    actions.append(h('button', { 'data-testid': 'buy', disabled: !enough, onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        const r = await api('POST', `/api/products/${p.id}/buy`, { request_id: requestId });
        flash(r.data.committed ? 'Paid: the money is held in escrow until you confirm receipt.' : 'Payment sent; waiting for the chain to commit it.');
        go(`#/trade/${r.data.trade_id}`);
      } catch (e) { flash(e.message, true); ev.target.disabled = false; }
    } }, `Buy for ${coins(p.price)}`));
  }
  show(h('h1', {}, p.title),
    h('div', { class: 'cols' },
      h('div', {}, p.has_photo ? h('img', { class: 'photo', src: `/api/products/${p.id}/photo`, alt: p.title }) : h('div', { class: 'thumb' }, 'no photo'),
        h('p', {}, p.description || h('span', { class: 'muted' }, 'No description.'))),
      h('div', { class: 'stack' },
        h('div', { class: 'card' }, h('div', { class: 'row' }, h('span', { class: 'price' }, coins(p.price)), statusBadge(p.status)),
          h('p', {}, 'Seller: ', h('a', { href: `#/seller/${encodeURIComponent(p.seller)}` }, p.seller)), actions),
        h('h2', {}, 'Seller\'s trade record'), trust)));
  try {
    const { data: s } = await api('GET', `/api/sellers/${encodeURIComponent(p.seller)}`);
    trust.replaceChildren(await trustStats(s.record), h('p', {}, h('a', { href: `#/seller/${encodeURIComponent(p.seller)}` }, 'Full profile and reviews')));
  } catch (e) { trust.replaceChildren(h('p', { class: 'muted' }, 'The chain could not be read: ', e.message)); }
}

// One trade of a seller's record, checked here: each transaction by the full check, and
// that they are what the row says (an escrow to this seller for this trade, closed by a
// release or refund of the same trade).
async function tradeBadges(t, sellerAddress) {
  const checks = [await checkBadge(t.open)];
  if (t.close) checks.push(await checkBadge(t.close));
  const closeKind = { released: 'escrow_release', refunded: 'escrow_refund' }[t.status];
  const consistent = t.open.tx && t.open.tx.kind === 'escrow_open' && t.open.tx.to === sellerAddress && t.open.tx.trade_id === t.trade_id &&
    t.open.tx.amount === t.amount && (t.close ? t.close.tx && t.close.tx.trade_id === t.trade_id && t.close.tx.kind === closeKind : t.status === 'open');
  return { checks, consistent, ok: t.verified && consistent && checks.every(isVerified) };
}

async function trustStats(r) {
  const results = await Promise.all(r.trades.map((t) => tradeBadges(t, r.address)));
  const allVerified = r.unverified === 0 && results.every((x) => x.ok);
  return h('div', {},
    h('div', { class: 'stats', 'data-testid': 'trust' },
      h('div', { class: 'stat' }, h('div', { class: 'n', 'data-testid': 'completed' }, r.completed), h('div', { class: 'l' }, 'completed')),
      h('div', { class: 'stat' }, h('div', { class: 'n' }, r.refunded), h('div', { class: 'l' }, 'refunded')),
      h('div', { class: 'stat' }, h('div', { class: 'n' }, r.open), h('div', { class: 'l' }, 'open')),
      h('div', { class: 'stat' }, h('div', { class: 'n' }, r.unverified), h('div', { class: 'l' }, 'not verifiable'))),
    r.trades.length === 0 ? h('p', { class: 'muted' }, 'No trades on the chain yet.')
      : h('p', {}, allVerified ? verdictBadge(true, '', { ok: true }) : badge(false, 'some trades could not be checked'),
        ' ', h('span', { class: 'muted' }, 'read from the chain, each transaction checked by Merkle proof and commit certificate, by the market and in this browser')));
}

// A review: its transaction by the full check, sent by the buyer, and its memo the digest of
// the text shown (market.cpp: SHA-256("popmarket/review/v1" \n trade \n buyer \n rating \n body)).
async function reviewBadge(r) {
  if (!r.verified || !r.proof) return badge(false, r.reason);
  const b = await checkBadge(r.proof);
  if (!isVerified(b)) return b;
  const enc = new TextEncoder();
  const digest = bytesHex(await sha256(enc.encode(`popmarket/review/v1\n${r.trade_id}\n${r.buyer_address}\n${r.rating}\n${r.body}`)));
  if (r.proof.tx.from !== r.buyer_address || r.proof.tx.payload !== bytesHex(enc.encode(`popmarket-review:${digest}`))) {
    return h('span', { class: 'badge bad', title: 'the text shown is not what the buyer signed', 'data-browser': 'mismatch' }, '✗ text mismatch');
  }
  return b;
}

async function pageSeller(show, name) {
  const { data: s } = await api('GET', `/api/sellers/${encodeURIComponent(name)}`);
  const rows = await Promise.all(s.record.trades.map(async (t) => {
    const { checks, consistent, ok } = await tradeBadges(t, s.record.address);
    const shown = ok ? checks[checks.length - 1]
      : !t.verified ? badge(false, (t.close && t.close.reason) || t.open.reason)
        : !consistent ? h('span', { class: 'badge bad', title: 'the transactions are not this trade\'s', 'data-browser': 'mismatch' }, '✗ record mismatch')
          : checks.find((b) => !isVerified(b));
    return h('tr', {},
      h('td', { class: 'mono' }, h('a', { href: `#/tx/${t.open.txid || ''}` }, short(t.trade_id))),
      h('td', {}, coins(t.amount)), h('td', {}, statusBadge(t.status)),
      h('td', {}, shown));
  }));
  const reviews = await Promise.all(s.reviews.map(async (r) => h('div', { class: 'card', 'data-testid': 'review' },
    h('div', { class: 'row' }, h('strong', {}, '★'.repeat(r.rating) + '☆'.repeat(5 - r.rating)), h('span', { class: 'muted' }, 'by ', r.buyer, ' · ', when(r.created_at)),
      await reviewBadge(r)), h('p', {}, r.body))));
  show(h('h1', {}, s.username, h('span', { class: 'muted' }, ' · member since ', new Date(s.member_since).toLocaleDateString())),
    h('p', { class: 'mono' }, h('a', { href: `#/address/${s.record.address}` }, s.record.address)),
    await trustStats(s.record),
    h('h2', {}, 'Trades on the chain'),
    rows.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'trade'), h('th', {}, 'amount'), h('th', {}, 'status'), h('th', {}, 'proof'))), h('tbody', {}, rows)) : h('p', { class: 'muted' }, 'None yet.'),
    h('h2', {}, 'Reviews'), reviews.length ? h('div', { class: 'stack' }, reviews) : h('p', { class: 'muted' }, 'No reviews yet.'));
}

async function pageSell(show) {
  if (!requireLogin(show)) return;
  const preview = h('img', { class: 'thumb', hidden: true, alt: '' });
  let photo = null;
  const file = h('input', { type: 'file', name: 'photo', accept: 'image/png,image/jpeg,image/gif,image/webp', onchange: (e) => {
    const f = e.target.files[0];
    if (!f) { photo = null; preview.hidden = true; return; }
    const reader = new FileReader();
    reader.onload = () => { photo = reader.result; preview.src = photo; preview.hidden = false; };
    reader.readAsDataURL(f);
  } });
  show(h('h1', {}, 'Sell something'), h('div', { class: 'card' }, form([
    input('Title', 'title', { required: true, maxlength: 100 }),
    h('label', {}, 'Description', h('textarea', { name: 'description', maxlength: 2000 })),
    input('Price (POP)', 'price', { type: 'number', min: 1, required: true }),
    h('label', {}, 'Photo (optional, up to 512 KiB)', file), preview,
  ], 'List it', async (fd) => {
    const { data } = await api('POST', '/api/products', { title: fd.get('title'), description: fd.get('description'), price: Number(fd.get('price')), photo });
    flash('Listed.');
    go(`#/product/${data.id}`);
  }, 'sell-form')));
}

async function pageWallet(show, params) {
  if (!requireLogin(show)) return;
  const [{ data: me }, { data: ch }] = await Promise.all([api('GET', '/api/me'), api('GET', '/api/charges')]);
  const nodes = me.balance_by_node.map((n) => h('tr', {}, h('td', { class: 'mono' }, n.node), h('td', { 'data-testid': 'node-balance' }, coins(n.balance))));
  const pending = me.pending_txs.map((t) => h('li', {}, h('span', { class: 'badge warn' }, 'pending'), ' ', t.kind, ' ', h('span', { class: 'mono' }, short(t.txid))));
  const charges = ch.charges.map((c) => h('tr', {}, h('td', {}, when(c.created_at)), h('td', {}, coins(c.amount)), h('td', { 'data-testid': 'charge-status' }, statusBadge(c.status)),
    h('td', {}, c.txid ? h('a', { class: 'mono', href: `#/tx/${c.txid}` }, short(c.txid)) : (c.note || ''))));
  show(h('h1', {}, 'Wallet'),
    h('div', { class: 'stats' },
      h('div', { class: 'stat' }, h('div', { class: 'n', 'data-testid': 'balance' }, coins(me.balance)), h('div', { class: 'l' }, 'committed balance')),
      h('div', { class: 'stat' }, h('div', { class: 'n' }, coins(me.in_escrow)), h('div', { class: 'l' }, 'held in escrow for your purchases'))),
    h('p', { class: 'mono' }, 'Address: ', h('a', { href: `#/address/${me.member.address}` }, me.member.address)),
    pending.length ? h('div', { class: 'card' }, h('strong', {}, 'Waiting for the chain'), h('ul', {}, pending)) : null,
    h('div', { class: 'cols' },
      h('div', {}, h('h2', {}, 'Request a charge'), h('div', { class: 'card' }, form([
        input('Amount (POP)', 'amount', { type: 'number', min: 1, required: true, value: params.get('amount') || '' }),
      ], 'Request', async (fd) => {
        const r = await api('POST', '/api/charges', { amount: Number(fd.get('amount')) });
        flash(r.data.status === 'approved' ? 'Approved and minted.' : 'Requested: the admin will review it.');
        route();
      }, 'charge-form'))),
      h('div', {}, h('h2', {}, 'Balance on each node'), h('table', {}, h('tbody', {}, nodes)))),
    h('h2', {}, 'My charge requests'),
    charges.length ? h('table', { 'data-testid': 'my-charges' }, h('thead', {}, h('tr', {}, h('th', {}, 'requested'), h('th', {}, 'amount'), h('th', {}, 'status'), h('th', {}, 'transaction'))), h('tbody', {}, charges)) : h('p', { class: 'muted' }, 'None yet.'));
}

function tradeRow(t, role) {
  const act = h('td', {});
  if (role === 'buyer' && t.status === 'open') act.append(h('button', { 'data-testid': 'confirm', onclick: () => tradeAction(t.trade_id, 'confirm') }, 'Confirm receipt'));
  if (role === 'seller' && t.status === 'open') act.append(h('button', { class: 'danger', onclick: () => tradeAction(t.trade_id, 'cancel') }, 'Cancel and refund'));
  if (role === 'buyer' && t.status === 'released' && !t.review) act.append(h('a', { href: `#/trade/${t.trade_id}`, 'data-testid': 'review-link' }, 'Leave a review'));
  return h('tr', { 'data-testid': `trade-${role}` }, h('td', {}, h('a', { href: `#/trade/${t.trade_id}` }, t.title)), h('td', {}, coins(t.amount)),
    h('td', {}, role === 'buyer' ? t.seller : t.buyer), h('td', {}, statusBadge(t.status)), act);
}

async function tradeAction(id, action) {
  try {
    const r = await api('POST', `/api/trades/${id}/${action}`);
    flash(r.data.committed ? `Done: ${action} committed on the chain.` : 'Sent; waiting for the chain to commit it.');
  } catch (e) { flash(e.message, true); }
  route();
}

async function pageMe(show) {
  if (!requireLogin(show)) return;
  const [{ data: b }, { data: s }] = await Promise.all([api('GET', '/api/trades?role=buyer'), api('GET', '/api/trades?role=seller')]);
  const table = (list, role) => list.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'product'), h('th', {}, 'amount'), h('th', {}, role === 'buyer' ? 'seller' : 'buyer'), h('th', {}, 'status'), h('th', {}, ''))),
    h('tbody', {}, list.map((t) => tradeRow(t, role)))) : h('p', { class: 'muted' }, 'None yet.');
  show(h('h1', {}, 'My page'),
    h('p', {}, 'My public profile: ', h('a', { href: `#/seller/${encodeURIComponent(state.member.username)}` }, state.member.username)),
    h('h2', {}, 'My purchases'), table(b.trades, 'buyer'), h('h2', {}, 'My sales'), table(s.trades, 'seller'));
}

async function pageTrade(show, id) {
  if (!requireLogin(show)) return;
  const { data: t } = await api('GET', `/api/trades/${id}`);
  const role = t.buyer === state.member.username ? 'buyer' : 'seller';
  const parts = [h('h1', {}, 'Trade: ', t.title),
    h('div', { class: 'card' },
      h('p', {}, statusBadge(t.status), ' ', t.committed ? h('span', { class: 'muted' }, 'committed on the chain') : h('span', { class: 'muted' }, 'not committed yet — this page shows the chain\'s answer, not a guess')),
      h('p', {}, 'Amount: ', coins(t.amount), ' · buyer ', t.buyer, ' · seller ', t.seller),
      h('p', { class: 'muted' }, `Reclaimable by the buyer after block ${t.deadline} (chain ${t.chain_height === null ? 'unreachable right now' : `at ${t.chain_height}`}).`),
      h('table', {}, h('tbody', {}, await Promise.all(t.proofs.map(async (p) => h('tr', {}, h('td', {}, p.tx ? p.tx.kind : 'pending'),
        h('td', { class: 'mono' }, p.txid ? h('a', { href: `#/tx/${p.txid}` }, short(p.txid)) : '—'),
        h('td', {}, p.found ? `block ${p.height}` : ''), h('td', {}, await checkBadge(p))))))),
      h('div', { class: 'row' },
        role === 'buyer' && t.status === 'open' ? h('button', { 'data-testid': 'confirm', onclick: () => tradeAction(id, 'confirm') }, 'Confirm receipt') : null,
        role === 'buyer' && t.status === 'open' && t.chain_height >= t.deadline ? h('button', { class: 'secondary', onclick: () => tradeAction(id, 'reclaim') }, 'Reclaim payment') : null,
        role === 'seller' && t.status === 'open' ? h('button', { class: 'danger', onclick: () => tradeAction(id, 'cancel') }, 'Cancel and refund') : null,
        !t.committed || ['opening', 'releasing', 'refunding'].includes(t.status) ? h('button', { class: 'secondary', onclick: () => route() }, 'Refresh') : null))];
  if (t.review) {
    parts.push(h('h2', {}, 'Review'), h('div', { class: 'card' }, h('strong', {}, '★'.repeat(t.review.rating)), ' ', statusBadge(t.review.status === 'anchored' ? 'released' : 'opening'), h('p', {}, t.review.body)));
  } else if (role === 'buyer' && t.status === 'released') {
    parts.push(h('h2', {}, 'Leave a review'), h('div', { class: 'card' }, form([
      h('label', {}, 'Rating', h('select', { name: 'rating' }, [5, 4, 3, 2, 1].map((n) => h('option', { value: n }, '★'.repeat(n))))),
      h('label', {}, 'Review', h('textarea', { name: 'body', maxlength: 1000, required: true })),
    ], 'Publish review', async (fd) => {
      await api('POST', `/api/trades/${id}/review`, { rating: Number(fd.get('rating')), body: fd.get('body') });
      flash('Review published; its digest is on the chain.');
      route();
    }, 'review-form')));
  }
  show(...parts);
  // A pending step is re-read until the chain has decided it.
  const uncertified = t.proofs.some((p) => p.found && !p.verified && (p.reason || '').startsWith('not certified'));
  if (uncertified || ['opening', 'releasing', 'refunding'].includes(t.status) || (t.review && t.review.status !== 'anchored')) {
    const here = location.hash;
    setTimeout(() => { if (location.hash === here) route(); }, 1500);
  }
}

async function pageAdmin(show) {
  if (!requireLogin(show)) return;
  const { data } = await api('GET', '/api/admin/charges?status=requested');
  const rows = data.charges.map((c) => h('tr', { 'data-testid': 'charge-request' }, h('td', {}, when(c.created_at)), h('td', {}, c.member), h('td', {}, coins(c.amount)),
    h('td', { class: 'row' },
      h('button', { 'data-testid': 'approve', onclick: async (e) => { e.target.disabled = true; try { const r = await api('POST', `/api/admin/charges/${c.id}/approve`); flash(r.data.status === 'approved' ? `Minted ${c.amount} POP for ${c.member}.` : 'Mint sent; waiting for the commit.'); } catch (err) { flash(err.message, true); } route(); } }, 'Approve (mint)'),
      h('button', { class: 'danger', onclick: async () => { try { await api('POST', `/api/admin/charges/${c.id}/reject`, { note: 'rejected by the admin' }); flash('Rejected.'); } catch (err) { flash(err.message, true); } route(); } }, 'Reject'))));
  show(h('h1', {}, 'Charge queue'),
    h('p', { class: 'muted' }, data.auto_approve_limit ? `Requests up to ${coins(data.auto_approve_limit)} are approved automatically.` : 'Every request waits for the admin.'),
    rows.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'requested'), h('th', {}, 'member'), h('th', {}, 'amount'), h('th', {}, ''))), h('tbody', {}, rows)) : h('p', { class: 'muted' }, 'No requests waiting.'));
}

async function pageExplorer(show, params) {
  const offset = Number(params.get('offset') || 0);
  const [{ data: st }, { data }] = await Promise.all([api('GET', '/api/chain/status'), api('GET', `/api/chain/blocks?limit=15&offset=${offset}`)]);
  const nodes = st.nodes.map((n) => h('tr', {}, h('td', { class: 'mono' }, n.node), h('td', {}, n.up ? h('span', { class: 'badge ok' }, 'up') : h('span', { class: 'badge bad' }, 'down')),
    h('td', {}, n.up ? n.status.height : '—'), h('td', {}, n.up ? n.status.view : '—')));
  const rows = await Promise.all(data.blocks.map(async (b) => h('tr', {}, h('td', {}, h('a', { href: `#/block/${b.height}` }, b.height)), h('td', { class: 'mono' }, short(b.hash)),
    h('td', {}, b.txs), h('td', {}, blockTime(b.timestamp_ms)),
    h('td', {}, b.verified ? verdictBadge(true, '', await browserCheck(verifyHeaderAnswer, b), b.replica_set) : badge(false, b.reason)))));
  const root = await trustRoot().catch(() => null);
  const fingerprint = root && browserCanCheck() ? await replicaSetFingerprint(root.replicas) : null;
  const search = h('form', { class: 'row search', onsubmit: (e) => {
    e.preventDefault();
    const v = e.target.q.value.trim();
    if (/^\d+$/.test(v)) go(`#/block/${v}`); else if (v.startsWith('pop')) go(`#/address/${v}`); else go(`#/tx/${v}`);
  } }, h('input', { name: 'q', placeholder: 'block height, tx id or address', 'aria-label': 'search the chain' }), h('button', { type: 'submit' }, 'Go'));
  show(h('h1', {}, 'Block explorer'), search,
    h('h2', {}, `Chain ${st.chain_id}: ${st.replicas} replicas`), h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'node'), h('th', {}, ''), h('th', {}, 'height'), h('th', {}, 'view'))), h('tbody', {}, nodes)),
    h('p', { class: 'muted' }, 'This page checks certificates against the genesis replica set',
      root ? ` (${root.replicas.length} replicas, quorum ${quorum(root.replicas.length)})` : '', ', fingerprint ',
      h('span', { class: 'mono', 'data-testid': 'trust-root-fingerprint' }, fingerprint || 'unavailable'),
      '. To trust nothing from this market, compare it with the one ', h('span', { class: 'mono' }, 'popmarket --print-trust-root genesis.json'),
      ' prints from a genesis file you hold.'),
    h('h2', {}, 'Latest blocks'), h('table', { 'data-testid': 'blocks' }, h('thead', {}, h('tr', {}, h('th', {}, 'height'), h('th', {}, 'hash'), h('th', {}, 'txs'), h('th', {}, 'time'), h('th', {}, 'proof'))), h('tbody', {}, rows)),
    h('div', { class: 'pager' }, h('button', { class: 'secondary', disabled: offset === 0, onclick: () => go(`#/explorer?offset=${Math.max(0, offset - 15)}`) }, '← Newer'),
      h('button', { class: 'secondary', disabled: data.height < offset + 15, onclick: () => go(`#/explorer?offset=${offset + 15}`) }, 'Older →')));
}

function txSummary(tx) {
  return h('table', {}, h('tbody', {},
    [['kind', tx.kind], ['from', tx.from], ['to', tx.to], ['amount', tx.amount], ['nonce', tx.nonce], ['trade id', tx.trade_id], ['deadline', tx.deadline]]
      .map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono' }, (k === 'from' || k === 'to') && v ? h('a', { href: `#/address/${v}` }, v) : String(v))))));
}

async function pageBlock(show, height) {
  const { data } = await api('GET', `/api/chain/blocks/${height}`);
  const b = data.block;
  const result = data.verified ? await browserCheck(verifyBlockAnswer, data) : null;
  show(h('h1', {}, `Block ${b.header.height} `, data.verified ? verdictBadge(true, '', result, data.replica_set) : badge(false, data.reason)),
    h('p', { class: 'muted' }, !data.verified ? data.reason : result.ok
      ? 'Checked by the market and again in this browser: its transactions hash to its tx root, the headers chain up to a stable checkpoint, and a quorum of the genesis replica set signed that checkpoint.'
      : `The market's check passed, this browser's did not: ${result.reason}`),
    h('table', {}, h('tbody', {}, [['hash', b.hash], ['previous', b.header.prev_hash], ['tx root', b.header.tx_root], ['state root', b.header.state_root], ['view', b.header.view], ['proposer', b.header.proposer], ['time', blockTime(b.header.timestamp_ms)]]
      .map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono' }, String(v)))))),
    h('div', { class: 'pager' }, b.header.height > 0 ? h('a', { href: `#/block/${b.header.height - 1}` }, '← previous') : null, h('a', { href: `#/block/${b.header.height + 1}` }, 'next →')),
    h('h2', {}, `Transactions (${b.txs.length})`),
    h('table', {}, h('tbody', {}, b.txs.map((t) => h('tr', {}, h('td', { class: 'mono' }, h('a', { href: `#/tx/${t.id}` }, short(t.id))), h('td', {}, t.kind), h('td', {}, coins(t.amount)))))));
}

async function pageTx(show, id) {
  const { data } = await api('GET', `/api/chain/txs/${encodeURIComponent(id)}`);
  const memo = data.tx.payload ? hexToText(data.tx.payload) : '';
  show(h('h1', {}, 'Transaction ', await checkBadge(data)),
    h('p', { class: 'mono' }, data.txid),
    h('p', {}, 'In ', h('a', { href: `#/block/${data.height}` }, `block ${data.height}`), `, position ${data.index}. `,
      h('span', { class: 'muted' }, data.verified ? 'Checked by the market and again in this browser: its fields hash to its id, the Merkle proof ties it to its block\'s header, the headers chain up to a stable checkpoint, and a quorum of the genesis replica set signed that checkpoint.' : data.reason)),
    txSummary(data.tx), memo ? h('p', {}, 'Memo: ', h('span', { class: 'mono' }, memo)) : null);
}

function hexToText(hex) {
  let s = '';
  for (let i = 0; i < hex.length; i += 2) s += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  return s.replace(/[^\x20-\x7e]/g, '·');
}

async function pageAddress(show, addr, params) {
  const offset = Number(params.get('offset') || 0);
  const { data } = await api('GET', `/api/chain/addresses/${encodeURIComponent(addr)}?limit=50&offset=${offset}`);
  show(h('h1', {}, 'Address'), h('p', { class: 'mono' }, data.address),
    data.member ? h('p', {}, 'Member: ', h('a', { href: `#/seller/${encodeURIComponent(data.member)}` }, data.member)) : null,
    h('div', { class: 'stats' }, h('div', { class: 'stat' }, h('div', { class: 'n' }, coins(data.balance)), h('div', { class: 'l' }, 'balance')),
      h('div', { class: 'stat' }, h('div', { class: 'n' }, data.nonce), h('div', { class: 'l' }, 'transactions sent'))),
    h('h2', {}, 'Transactions'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'tx'), h('th', {}, 'kind'), h('th', {}, 'from'), h('th', {}, 'to'), h('th', {}, 'amount'), h('th', {}, 'block'))),
      h('tbody', {}, data.txs.map((t) => h('tr', {}, h('td', { class: 'mono' }, h('a', { href: `#/tx/${t.txid}` }, short(t.txid, 6))), h('td', {}, t.kind),
        h('td', { class: 'mono' }, short(t.from, 6)), h('td', { class: 'mono' }, short(t.to, 6)), h('td', {}, t.amount), h('td', {}, t.height))))));
}

function pageAuth(show, signup) {
  show(h('h1', {}, signup ? 'Sign up' : 'Log in'), h('div', { class: 'card' }, form([
    input('Username', 'username', { required: true, autocomplete: 'username', minlength: signup ? 3 : 1, maxlength: 32 }),
    input('Password', 'password', { type: 'password', required: true, autocomplete: signup ? 'new-password' : 'current-password', minlength: signup ? 8 : 1 }),
  ], signup ? 'Create account' : 'Log in', async (fd) => {
    const { data } = await api('POST', signup ? '/api/signup' : '/api/login', { username: fd.get('username'), password: fd.get('password') });
    state.member = data.member; state.csrf = data.csrf;
    renderNav();
    flash(signup ? 'Welcome! A wallet was created for you.' : `Welcome back, ${data.member.username}.`);
    go('#/');
  }, signup ? 'signup-form' : 'login-form'),
  signup ? h('p', { class: 'muted' }, 'Your wallet key is stored encrypted under your password; the market can sign for you only while you are logged in.') : null));
}

// ---- router --------------------------------------------------------------------------------
async function route() {
  const [path, query] = (location.hash.slice(1) || '/').split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const seq = ++routeSeq;
  const show = (...nodes) => { if (seq === routeSeq) render(...nodes); };
  try {
    switch (parts[0]) {
      case undefined: await pageProducts(show, params); break;
      case 'product': await pageProduct(show, parts[1]); break;
      case 'seller': await pageSeller(show, parts[1]); break;
      case 'sell': await pageSell(show); break;
      case 'wallet': await pageWallet(show, params); break;
      case 'me': await pageMe(show); break;
      case 'trade': await pageTrade(show, parts[1]); break;
      case 'admin': await pageAdmin(show); break;
      case 'explorer': await pageExplorer(show, params); break;
      case 'block': await pageBlock(show, parts[1]); break;
      case 'tx': await pageTx(show, parts[1]); break;
      case 'address': await pageAddress(show, parts[1], params); break;
      case 'login': pageAuth(show, false); break;
      case 'signup': pageAuth(show, true); break;
      default: show(h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Back to the products')));
    }
  } catch (e) {
    if (e.status === 401) { state.member = null; renderNav(); }
    show(h('div', { class: 'card' }, h('p', {}, e.message)));
  }
  if (seq !== routeSeq) return;
  document.body.dataset.page = parts[0] || 'products';
  document.body.dataset.ready = String(Date.now());
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', async () => {
  try { await refreshSession(); } catch (e) { renderNav(); }
  route();
});
