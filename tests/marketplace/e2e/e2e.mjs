// The POP Market story in a real browser (Debian's chromium, headless, driven by
// playwright-core): two members sign up, one asks for a charge, the admin approves it, the
// other lists a product, the first buys it, confirms receipt and reviews it; the seller's
// profile shows one verified completed trade, and every node holds the same balances.
//   node e2e.mjs --url URL --nodes URL,URL,... --out DIR --admin-password PW
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const opts = {};
for (let i = 2; i < process.argv.length; i += 2) opts[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const k of ['url', 'nodes', 'out', 'admin-password']) if (!opts[k]) throw new Error(`--${k} is required`);
const nodes = opts.nodes.split(',');
const shots = path.join(opts.out, 'screenshots');
fs.mkdirSync(shots, { recursive: true });

const CHARGE = 500;
const PRICE = 120;
const stamp = Date.now().toString(36);
const buyer = { name: `alice_${stamp}`, password: 'alice password 1' };
const seller = { name: `bob_${stamp}`, password: 'bob password 12' };

function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
  console.log(`ok - ${message}`);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'popmarket-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1200, height: 860 },
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(30000);
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(String(e)));
// Console errors include Content-Security-Policy violations and failed requests.
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`console: ${m.text()}`); });
// Nothing may be fetched from anywhere but popmarket.
const origin = new URL(opts.url).origin;
await page.route('**/*', (route) => {
  const u = route.request().url();
  if (u.startsWith(origin) || u.startsWith('data:')) return route.continue();
  consoleErrors.push(`request outside the market: ${u}`);
  return route.abort();
});

async function open(hash, pageName) {
  await page.goto(`${opts.url}/${hash}`);
  await page.waitForFunction((p) => document.body.dataset.page === p && document.body.dataset.ready, pageName);
}
async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}
async function auth(kind, who) {
  await open(`#/${kind}`, kind);
  await page.fill(`[data-testid=${kind}-form] input[name=username]`, who.name);
  await page.fill(`[data-testid=${kind}-form] input[name=password]`, who.password);
  await page.click(`[data-testid=${kind}-form] button[type=submit]`);
  await page.waitForSelector(`[data-testid=whoami]:text-is("${who.name}")`);
}
async function logout() {
  await page.click('button:has-text("Log out")');
  await page.waitForSelector('a[href="#/login"]');
}
async function addressOf() {
  await open('#/wallet', 'wallet');
  return (await page.textContent('a[href^="#/address/"]')).trim();
}

try {
  // 1. Two members sign up.
  await auth('signup', buyer);
  const buyerAddress = await addressOf();
  await logout();
  await auth('signup', seller);
  const sellerAddress = await addressOf();
  await logout();
  check(buyerAddress.startsWith('pop') && sellerAddress.startsWith('pop'), 'both members got a wallet');

  // 2. The buyer asks for a charge.
  await auth('login', buyer);
  await open('#/wallet', 'wallet');
  await page.fill('[data-testid=charge-form] input[name=amount]', String(CHARGE));
  await page.click('[data-testid=charge-form] button[type=submit]');
  await page.waitForSelector('[data-testid=charge-status] [data-status=requested]');
  check((await page.textContent('[data-testid=balance]')).includes('0'), 'balance stays 0 until the admin approves');
  await logout();

  // 3. The admin approves it: a mint on the chain.
  await auth('login', { name: 'admin', password: opts['admin-password'] });
  await open('#/admin', 'admin');
  const row = page.locator('[data-testid=charge-request]', { hasText: buyer.name });
  await row.waitFor();
  await shot('admin-charge-queue');
  await row.locator('[data-testid=approve]').click();
  await page.waitForSelector('[data-testid=flash]:has-text("Minted")');
  await logout();

  // 4. The seller lists a product, with a photo.
  await auth('login', seller);
  await open('#/sell', 'sell');
  await page.fill('[data-testid=sell-form] input[name=title]', 'Vintage road bike');
  await page.fill('[data-testid=sell-form] textarea[name=description]', 'Steel frame, 56 cm, new tyres. Collect in person or shipped.');
  await page.fill('[data-testid=sell-form] input[name=price]', String(PRICE));
  // A photo drawn by the browser itself (a bicycle on a canvas), uploaded as a file.
  const dataUrl = await page.evaluate(() => {
    const c = document.createElement('canvas');
    c.width = 480; c.height = 360;
    const g = c.getContext('2d');
    const sky = g.createLinearGradient(0, 0, 0, 360);
    sky.addColorStop(0, '#dbe7ff'); sky.addColorStop(1, '#f7f9fc');
    g.fillStyle = sky; g.fillRect(0, 0, 480, 360);
    g.fillStyle = '#cfd8e3'; g.fillRect(0, 290, 480, 70);
    g.lineWidth = 8; g.strokeStyle = '#1d2330';
    for (const x of [130, 350]) { g.beginPath(); g.arc(x, 240, 70, 0, 2 * Math.PI); g.stroke(); }
    g.strokeStyle = '#c0392b'; g.lineWidth = 10; g.lineJoin = 'round';
    g.beginPath(); g.moveTo(130, 240); g.lineTo(215, 150); g.lineTo(320, 150); g.lineTo(350, 240);
    g.moveTo(215, 150); g.lineTo(245, 240); g.lineTo(320, 150); g.moveTo(130, 240); g.lineTo(245, 240); g.stroke();
    g.strokeStyle = '#1d2330'; g.lineWidth = 7;
    g.beginPath(); g.moveTo(205, 130); g.lineTo(235, 130); g.moveTo(320, 150); g.lineTo(315, 115); g.lineTo(345, 110); g.stroke();
    return c.toDataURL('image/png');
  });
  const png = Buffer.from(dataUrl.split(',')[1], 'base64');
  await page.setInputFiles('[data-testid=sell-form] input[type=file]', { name: 'bike.png', mimeType: 'image/png', buffer: png });
  await page.waitForSelector('[data-testid=sell-form] img.thumb[src^="data:image/png"]');
  await page.click('[data-testid=sell-form] button[type=submit]');
  await page.waitForFunction(() => document.body.dataset.page === 'product');
  const productUrl = page.url();
  await logout();

  // 5. The buyer finds it, buys it: the payment is held in escrow.
  await auth('login', buyer);
  await open('#/', 'products');
  await page.waitForSelector('[data-testid=product-card]:has-text("Vintage road bike")');
  await shot('products');
  await page.goto(productUrl);
  await page.waitForSelector('[data-testid=buy]:not([disabled])');
  await shot('product-page');
  await page.click('[data-testid=buy]');
  await page.waitForFunction(() => document.body.dataset.page === 'trade');
  await page.waitForSelector('[data-status=open]');
  await shot('trade-in-escrow');

  // 6. Confirms receipt: the escrow is released to the seller.
  await page.click('[data-testid=confirm]');
  await page.waitForSelector('[data-status=released]');

  // 7. Leaves a review, anchored on the chain.
  await page.waitForSelector('[data-testid=review-form]');
  await page.selectOption('[data-testid=review-form] select[name=rating]', '5');
  await page.fill('[data-testid=review-form] textarea[name=body]', 'Exactly as described, quick hand-over.');
  await page.click('[data-testid=review-form] button[type=submit]');
  await page.waitForSelector('[data-testid=flash]:has-text("Review published")');
  await open('#/me', 'me');
  await page.waitForSelector('[data-testid=trade-buyer] [data-status=released]');
  await shot('my-page');
  await open('#/wallet', 'wallet');
  await shot('wallet');

  // 8. The seller's profile: one completed trade, verified against the chain's certificates.
  // A block is certified once a stable checkpoint covers it, so this may take a moment.
  let verified = false;
  for (let attempt = 0; attempt < 40 && !verified; ++attempt) {
    await open(`#/seller/${seller.name}`, 'seller');
    const completed = (await page.textContent('[data-testid=completed]')).trim();
    // data-browser=verified: set only when the page's own full check (static/verify.js:
    // tx id, Merkle path, headers, a quorum of the genesis set's signatures) passed too.
    const badges = await page.locator('[data-testid=trust] ~ p [data-testid=verified][data-browser=verified]').count();
    const review = await page.locator('[data-testid=review] [data-testid=verified][data-browser=verified]').count();
    const browserChecked = await page.locator('td [data-testid=verified][data-browser=verified]').count();
    verified = completed === '1' && badges === 1 && review === 1 && browserChecked === 1;
    if (!verified) await page.waitForTimeout(500);
  }
  await shot('seller-profile');
  check(verified, "the seller's profile shows one verified completed trade and a verified review");

  // The page's own Merkle check accepts the real proof and refuses altered ones.
  const merkle = await page.evaluate(async () => {
    const profile = await (await fetch(location.pathname.replace(/[^/]*$/, '') + `api/sellers/${location.hash.split('/')[2]}`)).json();
    const c = profile.record.trades[0].open;
    const flip = (hex) => (hex[0] === '0' ? '1' : '0') + hex.slice(1);
    const p = c.merkle_proof;
    return {
      real: await merkleVerify(c.tx_root, c.txid, p),
      otherTx: await merkleVerify(c.tx_root, flip(c.txid), p),
      otherRoot: await merkleVerify(flip(c.tx_root), c.txid, p),
      otherIndex: await merkleVerify(c.tx_root, c.txid, { ...p, index: p.index + 1, leaf_count: p.leaf_count + 1 }),
    };
  });
  check(merkle.real && !merkle.otherTx && !merkle.otherRoot && !merkle.otherIndex,
    `the browser's Merkle check accepts the proof and refuses altered ones (${JSON.stringify(merkle)})`);

  // The page's full check accepts the real answers and refuses a forged signature, a
  // duplicated signer and a set it was not given, on its own, in the browser.
  const full = await page.evaluate(async () => {
    const profile = await (await fetch(location.pathname.replace(/[^/]*$/, '') + `api/sellers/${location.hash.split('/')[2]}`)).json();
    const root = await (await fetch(location.pathname.replace(/[^/]*$/, '') + 'api/chain/trust-root')).json();
    const t = profile.record.trades[0];
    const flip = (hex, at) => hex.slice(0, at) + ((parseInt(hex[at], 16) ^ 1).toString(16)) + hex.slice(at + 1);
    const forged = structuredClone(t.close);
    const cp = forged.commit_proof.certificate.checkpoints[0];
    cp.signature = flip(cp.signature, 100);
    const duplicated = structuredClone(t.close);
    const list = duplicated.commit_proof.certificate.checkpoints;
    list.splice(0, list.length, ...Array(list.length).fill(list[0]));
    const otherSet = structuredClone(root);
    otherSet.replicas.reverse().forEach((r, i) => { r.id = i; });
    const header = structuredClone(t.open);
    header.header.timestamp_ms += 1;
    return {
      open: (await verifyTxAnswer(t.open, root)).ok,
      close: (await verifyTxAnswer(t.close, root)).ok,
      forged: (await verifyTxAnswer(forged, root)).kind,
      duplicated: (await verifyTxAnswer(duplicated, root)).kind,
      otherSet: (await verifyTxAnswer(t.open, otherSet)).ok,
      header: (await verifyTxAnswer(header, root)).kind,
      signers: t.close.commit_proof.certificate.checkpoints.length,
      quorum: quorum(root.replicas.length),
      fingerprint: await replicaSetFingerprint(root.replicas),
    };
  });
  check(full.open && full.close && full.forged === 'certificate' && full.duplicated === 'certificate' && !full.otherSet &&
    full.header === 'chain' && full.signers >= full.quorum,
  `the browser's full check accepts the trade's answers and refuses a forged signature, a duplicated signer, another set and an altered header (${JSON.stringify(full)})`);
  if (opts.fingerprint) check(full.fingerprint === opts.fingerprint, `the page's replica set is the genesis file's (fingerprint ${full.fingerprint})`);

  // A market that lies: its answer still says "verified", with one signature of the trade's
  // certificate forged. The page must show it as invalid, from its own check.
  await page.route('**/api/sellers/**', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    for (const t of body.record.trades) {
      const cp = t.close.commit_proof.certificate.checkpoints[0];
      cp.signature = (cp.signature[0] === '0' ? '1' : '0') + cp.signature.slice(1);
    }
    await route.fulfill({ response, json: body });
  });
  await page.goto('about:blank'); // a fresh load, not a hash change to the page already shown
  await open(`#/seller/${seller.name}`, 'seller');
  const lied = {
    invalid: await page.locator('td [data-browser=invalid]').count(),
    verifiedRows: await page.locator('td [data-testid=verified]').count(),
    summary: await page.locator('[data-testid=trust] ~ p [data-testid=verified]').count(),
  };
  await shot('seller-profile-forged');
  await page.unroute('**/api/sellers/**');
  check(lied.invalid === 1 && lied.verifiedRows === 0 && lied.summary === 0,
    `a forged signature in an answer popmarket marks verified shows as "certificate invalid" (${JSON.stringify(lied)})`);

  // 9. The explorer shows the blocks with their badges, and the set's fingerprint.
  await open('#/explorer', 'explorer');
  await page.waitForSelector('[data-testid=blocks] [data-testid=verified][data-browser=verified]');
  if (opts.fingerprint) {
    const shown = (await page.textContent('[data-testid=trust-root-fingerprint]')).trim();
    check(shown === opts.fingerprint, 'the explorer shows the fingerprint `popmarket --print-trust-root` prints');
  }
  await shot('explorer');
  const txLink = page.locator('[data-testid=blocks] a').first();
  await txLink.click();
  await page.waitForFunction(() => document.body.dataset.page === 'block');
  await shot('block');

  // 10. Balances add up on every node.
  const expected = { [buyerAddress]: CHARGE - PRICE, [sellerAddress]: PRICE };
  let agree = false;
  let seen = [];
  for (let attempt = 0; attempt < 50 && !agree; ++attempt) {
    seen = [];
    for (const n of nodes) {
      const out = {};
      for (const a of Object.keys(expected)) {
        const r = await fetch(`${n}/v1/accounts/${a}`);
        out[a] = (await r.json()).balance;
      }
      seen.push(out);
    }
    agree = seen.every((s) => Object.entries(expected).every(([a, b]) => s[a] === b));
    if (!agree) await new Promise((r) => setTimeout(r, 200));
  }
  check(agree, `balances on all ${nodes.length} nodes: buyer ${CHARGE - PRICE}, seller ${PRICE} (${JSON.stringify(seen)})`);
  check(consoleErrors.length === 0, `no page errors, console errors or requests outside the market (${consoleErrors.join('; ')})`);
  console.log(`screenshots in ${shots}`);
} catch (e) {
  await shot('failure').catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
