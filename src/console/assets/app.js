/*
 * Airlock approver console: a small hash-routed page over /console/api.
 *
 * Rules this file keeps (see the console contract):
 * - Everything the server sends is inserted as text (textContent / text nodes via h()),
 *   never as HTML: statements, parameters and audit rows may be written by a hostile agent.
 * - No inline script, no eval, no style attributes: the page runs under a strict CSP.
 * - Every API call (GET too) carries the X-Airlock-CSRF token, kept in localStorage: a
 *   browser sends the cookie to every port of 127.0.0.1, so a page on another local port
 *   gets the cookie too; the cookie alone must open nothing, and localStorage is per origin
 *   (port included). Every POST carries Content-Type: application/json. The session cookie
 *   itself is HttpOnly and never seen here.
 * - A 401, or a 403 csrf_failed, from any call means the session is gone: the sign-in view
 *   replaces everything.
 * - Text an agent or an identity provider can influence goes through visible(): invisible,
 *   bidi and look-alike space characters are shown escaped, never obeyed.
 */
'use strict';

(() => {
  const API = '/console/api';
  const CSRF_KEY = 'airlock-console-csrf';
  const POLL_MS = 10000;
  // The server ends the event stream every 5 minutes (and at shutdown): reconnect soon,
  // backing off while it cannot be reached.
  const STREAM_RETRY_MS = 1000;
  const STREAM_RETRY_MAX_MS = 30000;
  const REVIEW_STATUSES = [
    ['pending_review', 'Pending'],
    ['approved', 'Approved'],
    ['rejected', 'Rejected'],
    ['expired', 'Expired'],
    ['', 'All'],
  ];
  const OUTCOMES = ['ok', 'denied', 'error', 'timeout', 'cancelled', 'interrupted', 'pending_review'];
  // Audit fields shown first in an event card, in this order; the rest follow alphabetically.
  const AUDIT_FIELD_ORDER = [
    'time', 'operation', 'connection', 'principal', 'decision', 'rule', 'outcome', 'approved_by',
    'reason', 'row_count', 'duration_ms', 'error_class', 'sqlstate', 'statement', 'submitted',
  ];
  const AUDIT_FIELD_LAST = ['execution_id', 'review_id', 'session_id', 'request_id', 'id', 'seq', 'version'];
  // Generic string fields shown as blocks, line breaks kept: code, then people's words.
  const CODE_FIELDS = new Set(['statement', 'submitted', 'command', 'body', 'stdin']);
  const TEXT_FIELDS = new Set(['reason', 'comment', 'message', 'rejection_reason']);

  const state = {
    me: null,            // /console/api/me once signed in
    csrf: null,          // the session proof sent as X-Airlock-CSRF (also in localStorage)
    view: null,          // the view currently mounted in #view
    seq: 0,              // bumped on every mount: responses for an older mount are dropped
    reviewStatus: 'pending_review',
    reviewId: null,      // the review open in the detail pane
    lastListJson: '',    // skip re-rendering when a refresh brings nothing new
    lastDetailJson: '',
    live: null,          // { stream, retry, failures, timer } while the reviews view is shown
    livePaused: false,
    lastActivity: Date.now(),
    refreshTimer: null,
    audit: null,         // { query, cursor, shownExecutions, opener }
    sessionsCursor: null,
    player: null,        // the AsciinemaPlayer instance on screen, disposed before another
    replaySeq: 0,
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers

  // Builds an element. Strings among the children become text nodes, so nothing the server
  // sends is ever parsed as HTML. Props: class, dataset, on<event>, or an attribute.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  let uidCounter = 0;
  const uid = (prefix) => `${prefix}-${++uidCounter}`;

  // A labelled form control: the label's text is the control's accessible name.
  function field(label, control, hint) {
    if (!control.id) control.id = uid('field');
    const hintEl = hint ? h('p', { class: 'hint', id: uid('hint') }, hint) : null;
    if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
    return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
  }

  // Text that moves the reader's eye (bidi overrides), hides (zero-width, format characters)
  // or fakes a space must be seen, not obeyed: show it as \u{...} like the server's
  // statement_visible does. Newlines are kept where the text is shown as a block.
  // The format characters and U+2800/U+FFFC are listed one by one as well: a browser whose
  // Unicode tables are older than the server's must not let them through.
  const INVISIBLE = new RegExp('[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}\\p{Default_Ignorable_Code_Point}' +
    '\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000\\u2800\\ufffc' +
    '\\u0600-\\u0605\\u06dd\\u070f\\u0890\\u0891\\u08e2' +
    '\\u{110bd}\\u{110cd}\\u{13430}-\\u{1343f}\\u{1bca0}-\\u{1bca3}]', 'gu');
  function visible(text, keepNewlines = true) {
    if (text === undefined || text === null) return '';
    return String(text).replace(INVISIBLE, (c) =>
      keepNewlines && c === '\n' ? c : `\\u{${c.codePointAt(0).toString(16)}}`);
  }

  // One line of text for a table cell: first line only, escaped, cut to `max` characters
  // (counted in code points, so a cut never splits a surrogate pair).
  function oneLine(text, max = 90) {
    if (text === undefined || text === null) return '';
    const lines = String(text).split('\n');
    const chars = Array.from(visible(lines[0], false));
    const more = lines.length > 1 || chars.length > max;
    return chars.slice(0, max).join('') + (more ? '…' : '');
  }

  // The last 8 characters: ids are UUIDv7, whose first characters are a timestamp shared
  // by everything made in the same minute; the tail is random, so it tells them apart.
  const shortId = (id) => String(id || '').slice(-8);
  // issuer/subject: an identity provider or an agent's token chose both, so escaped.
  const who = (p) => (p ? visible(`${p.issuer}/${p.subject}`, false) : '');

  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  // Tables get a shorter form (no year, no weekday) so the statement column keeps its room.
  const shortTimeFormat = new Intl.DateTimeFormat(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });

  // Local time for people, the exact ISO value for machines and for the tooltip.
  function timeEl(iso, short = false) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return h('span', {}, visible(iso, false));
    return h('time', { datetime: iso, title: iso }, (short ? shortTimeFormat : timeFormat).format(date));
  }

  const STATUS_TONES = {
    pending_review: 'wait', running: 'info',
    approved: 'good', done: 'good', succeeded: 'good', ok: 'good', ended: 'good', allow: 'good',
    rejected: 'bad', failed: 'bad', denied: 'bad', deny: 'bad', error: 'bad', unknown: 'bad',
    expired: 'muted', cancelled: 'muted', interrupted: 'muted', timeout: 'bad', review: 'wait',
  };
  // The badge's text is the raw status string (any value renders); colour is only a hint.
  function badge(status) {
    const tone = STATUS_TONES[status] || 'neutral';
    return h('span', { class: `badge badge-${tone}` }, visible(status, false));
  }

  function table(caption, headers, rows) {
    return h('div', { class: 'table-wrap' },
      h('table', {},
        h('caption', { class: 'visually-hidden' }, caption),
        h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, rows)));
  }

  // A definition list from [term, value] pairs; pairs with an empty value are left out.
  function dl(pairs, cls = 'facts') {
    const list = h('dl', { class: cls });
    for (const [term, value] of pairs) {
      if (value === undefined || value === null || value === '' ||
          (Array.isArray(value) && value.length === 0)) continue;
      list.append(h('div', {}, h('dt', {}, term), h('dd', {}, value)));
    }
    return list;
  }

  function setBusy(form, busy) {
    form.setAttribute('aria-busy', busy ? 'true' : 'false');
    for (const el of form.querySelectorAll('button, input, select, textarea')) el.disabled = busy;
  }

  // Moves focus to a heading after navigation so keyboard and screen reader users land on
  // the new content; headings get tabindex=-1 (focusable, never in the Tab order).
  function focusHeading(el) {
    if (el) el.focus();
  }

  // ---------------------------------------------------------------- messages

  function showError(err) {
    if (err && err.handled) return;
    const text = typeof err === 'string' ? err : (err && err.detail) || String(err);
    const alert = $('alert');
    alert.textContent = '';
    alert.textContent = visible(text); // a problem's detail may quote what an agent sent
  }

  function showStatus(text) {
    const status = $('status');
    status.textContent = '';
    status.textContent = visible(text);
  }

  function clearMessages() {
    $('alert').textContent = '';
    $('status').textContent = '';
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, problem) {
      const detail = problem.detail || problem.title || `The server answered ${status}.`;
      super(detail);
      this.status = status;
      this.code = problem.code;
      this.detail = detail;
    }
  }

  async function readProblem(res) {
    const type = res.headers.get('Content-Type') || '';
    try {
      if (type.includes('json')) return await res.json();
      const text = (await res.text()).trim();
      return { detail: text ? text.slice(0, 300) : undefined };
    } catch {
      return {};
    }
  }

  // A 401, or a 403 csrf_failed (the stored token belongs to no live session), both mean:
  // this session is over.
  const sessionGone = (e) => e.status === 401 || (e.status === 403 && e.code === 'csrf_failed');

  // The session proof lives in localStorage so that a reload keeps the session. If storage
  // is refused (some private modes), it lives in memory only: a reload then signs out.
  function storedCsrf() {
    try { return localStorage.getItem(CSRF_KEY); } catch { return null; }
  }

  function keepCsrf(token) {
    state.csrf = token;
    try { localStorage.setItem(CSRF_KEY, token); } catch { /* memory only */ }
  }

  // Forgets the token this page used. Another tab may have signed in since and stored a
  // newer one: that one stays (the storage listener brings this tab over to it).
  function dropCsrf() {
    try {
      if (localStorage.getItem(CSRF_KEY) === state.csrf) localStorage.removeItem(CSRF_KEY);
    } catch { /* nothing stored */ }
    state.csrf = null;
  }

  // The request headers every console call carries: the session proof, and for a live
  // refresh the marker the server does not count as the person's activity (so an
  // unattended console still reaches its idle timeout).
  function apiHeaders(accept, { csrf = true, proof = state.csrf, background = false } = {}) {
    const headers = { Accept: accept };
    if (csrf && proof) headers['X-Airlock-CSRF'] = proof;
    if (background) headers['X-Airlock-Background'] = '1';
    return headers;
  }

  // fetch() for the console API. `signOutOn401: false` is for the sign-in calls and the
  // first /me, whose 401 means "bad token" or "no session yet", not "session gone".
  // `csrf: false` for the calls made before there is a session (login-options, sign-in);
  // `proof` tries a session proof other than the current one.
  // `as: 'text'` returns the body as text (recordings), else JSON.
  async function api(path, {
    method = 'GET', body, query, signOutOn401 = true, background = false, csrf = true, proof, as = 'json',
  } = {}) {
    const url = new URL(API + path, location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
    }
    const headers = apiHeaders(as === 'json' ? 'application/json' : '*/*', { csrf, proof, background });
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      if (body !== undefined) init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, { detail: `Airlock could not be reached (${e.message}).` });
    }
    if (!res.ok) {
      const error = new ApiError(res.status, await readProblem(res));
      if (signOutOn401 && sessionGone(error)) {
        signedOut('Your session has ended. Sign in again.');
        error.handled = true;
      }
      throw error;
    }
    if (res.status === 204) return null;
    return as === 'text' ? res.text() : res.json();
  }

  // ---------------------------------------------------------------- sign-in

  // `me` is the /me object (also the answer of a sign-in): its csrf_token is the session
  // proof every later call sends.
  function signedIn(me) {
    state.me = me;
    if (me.csrf_token) keepCsrf(me.csrf_token);
    $('whoami').textContent = who(me.principal);
    $('nav-audit').hidden = !me.auditor;
    $('nav').hidden = false;
    state.view = null;
    route(false);
  }

  // Forgets the session and shows the sign-in view (the cookie is the server's business).
  function signedOut(message) {
    state.me = null;
    dropCsrf();
    stopLive();
    disposePlayer();
    $('nav').hidden = true;
    $('whoami').textContent = '';
    state.view = null;
    renderSignIn();
    if (message) showError(message);
  }

  // Only same-origin links are followed from login-options: a stored `javascript:` or
  // off-site href must not become a sign-in button.
  function safeHref(href) {
    try {
      const url = new URL(href, location.origin);
      return url.origin === location.origin ? url.pathname + url.search : null;
    } catch {
      return null;
    }
  }

  async function renderSignIn() {
    const seq = ++state.seq;
    state.view = 'signin';
    document.title = 'Sign in · Airlock console';
    const view = $('view');
    view.replaceChildren(h('section', { class: 'signin panel' },
      h('h1', { tabindex: '-1' }, 'Sign in'),
      h('p', {}, 'Approve held requests, search the audit log and replay recorded sessions.'),
      h('div', { id: 'signin-options' }, h('p', { class: 'muted' }, 'Loading sign-in options…'))));
    let options;
    try {
      options = await api('/login-options', { signOutOn401: false, csrf: false });
    } catch (e) {
      if (seq === state.seq) $('signin-options').replaceChildren();
      showError(e);
      return;
    }
    if (seq !== state.seq) return;
    $('signin-options').replaceChildren(...signInOptions(options));
  }

  function signInOptions(options) {
    const parts = [];
    const issuers = (options.issuers || []).filter((i) => safeHref(i.href));
    if (issuers.length) {
      parts.push(h('ul', { class: 'issuer-list' }, issuers.map((issuer) =>
        h('li', {}, h('a', { class: 'button', href: safeHref(issuer.href) },
          `Sign in with ${visible(issuer.name, false)}`)))));
    }
    if (options.dev) {
      const token = h('textarea', {
        name: 'token', rows: '4', required: true, autocomplete: 'off', spellcheck: 'false',
        class: 'mono',
      });
      parts.push(h('form', { class: 'dev-signin', onsubmit: onDevSignIn },
        field('Dev token', token, 'A JWT from the dev issuer (offered on loopback only).'),
        h('button', { type: 'submit' }, 'Sign in with dev token')));
    }
    if (!parts.length) {
      parts.push(h('p', {}, 'No sign-in method is configured for this console. Ask the Airlock operator.'));
    }
    return parts;
  }

  async function onDevSignIn(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const token = form.elements.token.value.trim();
    if (!token) return showError('Paste a token first.');
    setBusy(form, true);
    const ok = await devSignIn(token);
    if (!ok && form.isConnected) setBusy(form, false);
  }

  function devSignIn(token) {
    return signInWith('/login/dev', { token });
  }

  // POSTs a sign-in (dev token or one-time link code). No session proof exists yet: the
  // server checks Origin/Sec-Fetch-Site instead, and answers with the /me object.
  async function signInWith(path, body) {
    clearMessages();
    try {
      const me = await api(path, { method: 'POST', body, signOutOn401: false, csrf: false });
      signedIn(me);
      return true;
    } catch (e) {
      if (state.view !== 'signin') renderSignIn();
      showError(e);
      return false;
    }
  }

  async function onSignOut() {
    try {
      await api('/logout', { method: 'POST' });
    } catch (e) {
      if (e.status !== 401) return showError(e);
    }
    signedOut();
    showStatus('Signed out');
  }

  // The fragment can carry a one-time sign-in link's code, the session proof an OIDC
  // sign-in hands over, or an OIDC error code. Each is consumed and removed from the URL at
  // once, so no secret stays in the address bar or the history.
  function consumeFragment() {
    const hash = location.hash;
    const take = (prefix) => {
      let value = hash.slice(prefix.length);
      try { value = decodeURIComponent(value); } catch { /* keep it raw */ }
      history.replaceState(null, '', location.pathname + location.search);
      return value;
    };
    if (hash.startsWith('#sign-in=')) return { linkCode: take('#sign-in=') };
    if (hash.startsWith('#session=')) return { sessionToken: take('#session=') };
    if (hash.startsWith('#login-error=')) return { loginError: take('#login-error=') };
    return null;
  }

  // The OIDC callback's error codes, in fixed wording: the fragment is in a URL anyone can
  // craft and send, so its text is never shown ("approve review now" stays unsaid).
  const LOGIN_ERRORS = new Map([
    ['provider_error', 'The identity provider refused the sign-in.'],
    ['expired', 'This sign-in expired or was already used. Start again.'],
    ['other_browser', 'This sign-in was started in another browser. Start again here.'],
    ['refused', "The identity provider's answer could not be verified."],
    ['agents_not_allowed', "The console is for people; this account is an agent's."],
    ['needs_public_url',
      'Sign-in with the identity provider is not configured for this address (console.public_url).'],
    ['unavailable', 'The identity provider cannot be reached right now.'],
    ['not_configured', 'There is no such sign-in here.'],
  ]);
  const loginErrorText = (code) => LOGIN_ERRORS.get(code) || 'Sign-in failed.';

  // ---------------------------------------------------------------- routing

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    let id = parts[1] || null;
    try { id = id && decodeURIComponent(id); } catch { id = null; }
    if (parts[0] === 'audit') return { view: 'audit' };
    if (parts[0] === 'sessions') return { view: 'sessions' };
    return { view: 'reviews', id };
  }

  // Renders what the hash asks for. `navigated` is true for a user's navigation, which
  // moves focus to the new heading (the first load leaves focus at the top of the page).
  function route(navigated) {
    if (!state.me) return;
    const { view, id } = parseRoute();
    for (const link of document.querySelectorAll('#nav a[data-route]')) {
      if (link.dataset.route === view) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (view !== 'sessions') disposePlayer();
    if (view === 'reviews') startLive(); else stopLive();
    if (state.view === 'reviews' && view === 'reviews') {
      openReview(id, navigated);
      return;
    }
    clearMessages();
    if (view === 'audit') mountAudit(navigated);
    else if (view === 'sessions') mountSessions(navigated);
    else mountReviews(id, navigated);
  }

  // Replaces #view with a new view; returns its h1 (for focus after navigation).
  function mountView(name, title, ...content) {
    state.seq += 1;
    state.view = name;
    document.title = `${title} · Airlock console`;
    const heading = h('h1', { id: uid('heading'), tabindex: '-1' }, title);
    $('view').replaceChildren(h('section', { class: `view-${name}`, 'aria-labelledby': heading.id },
      heading, ...content));
    return heading;
  }

  // ---------------------------------------------------------------- reviews

  function mountReviews(id, navigated) {
    const select = h('select', { name: 'status', onchange: onStatusFilter },
      REVIEW_STATUSES.map(([value, label]) =>
        h('option', { value, selected: value === state.reviewStatus }, label)));
    const heading = mountView('reviews', 'Reviews',
      h('div', { class: 'toolbar' }, field('Status', select),
        h('p', { class: 'muted live-note', id: 'live-note' }, '')),
      h('div', { id: 'review-list' }, h('p', { class: 'muted' }, 'Loading reviews…')),
      h('section', { id: 'review-detail', class: 'detail', 'aria-label': 'Review detail', hidden: true }));
    state.lastListJson = '';
    state.reviewId = null;
    refreshReviews();
    if (id) openReview(id, navigated);
    else if (navigated) focusHeading(heading);
  }

  function onStatusFilter(event) {
    state.reviewStatus = event.target.value;
    state.lastListJson = '';
    refreshReviews();
  }

  async function refreshReviews(background = false) {
    const seq = state.seq;
    let data;
    try {
      data = await api('/reviews', { query: { status: state.reviewStatus, limit: 200 }, background });
    } catch (e) {
      showError(e);
      return;
    }
    if (seq !== state.seq || state.view !== 'reviews') return;
    const note = $('live-note');
    if (note) note.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    const json = JSON.stringify([state.reviewStatus, data.reviews]);
    if (json === state.lastListJson) return;
    state.lastListJson = json;
    renderReviewList(data.reviews || []);
  }

  function renderReviewList(reviews) {
    const container = $('review-list');
    // A refresh must not take focus away from the row the user is on.
    const focusedId = document.activeElement && container.contains(document.activeElement)
      ? document.activeElement.dataset.reviewId : null;
    if (!reviews.length) {
      const label = REVIEW_STATUSES.find(([v]) => v === state.reviewStatus)[1].toLowerCase();
      container.replaceChildren(h('p', { class: 'empty' },
        state.reviewStatus ? `No ${label} reviews.` : 'No reviews.'));
      return;
    }
    const rows = reviews.map((r) => h('tr', { class: r.id === state.reviewId ? 'selected' : null },
      h('td', {}, h('button', {
        type: 'button', class: 'button-link', dataset: { reviewId: r.id },
        onclick: () => { location.hash = `#/reviews/${encodeURIComponent(r.id)}`; },
      }, 'Open review ', h('span', { class: 'mono' }, shortId(r.id)))),
      h('td', {}, badge(r.status)),
      h('td', {}, visible(r.connection, false)),
      h('td', { class: 'nowrap' }, who(r.requester)),
      h('td', { class: 'mono clip', title: visible(r.statement_visible) }, oneLine(r.statement_visible)),
      h('td', {}, timeEl(r.expires_at, true))));
    container.replaceChildren(table('Reviews',
      ['Review', 'Status', 'Connection', 'Requester', 'Statement', 'Expires'], rows));
    if (focusedId) {
      const again = [...container.querySelectorAll('button[data-review-id]')]
        .find((b) => b.dataset.reviewId === focusedId);
      if (again) again.focus();
    }
  }

  async function openReview(id, navigated) {
    const pane = $('review-detail');
    if (!pane) return;
    state.reviewId = id;
    state.lastDetailJson = '';
    for (const row of document.querySelectorAll('#review-list tr')) {
      const button = row.querySelector('button[data-review-id]');
      row.classList.toggle('selected', !!button && button.dataset.reviewId === id);
    }
    if (!id) {
      pane.hidden = true;
      pane.replaceChildren();
      return;
    }
    pane.hidden = false;
    pane.replaceChildren(h('p', { class: 'muted' }, 'Loading review…'));
    const review = await fetchReview(id);
    if (state.reviewId !== id || !pane.isConnected) return;
    if (!review) {
      pane.replaceChildren(h('p', { class: 'muted' }, 'This review could not be loaded.'));
      return;
    }
    renderReviewDetail(review);
    if (navigated) focusHeading(pane.querySelector('h2'));
  }

  async function fetchReview(id, background = false) {
    const seq = state.seq;
    try {
      const review = await api(`/reviews/${encodeURIComponent(id)}`, { background });
      return seq === state.seq ? review : null;
    } catch (e) {
      showError(e);
      return null;
    }
  }

  // Re-renders the review's facts; the approve/reject forms are kept as they are while the
  // review stays pending, so a live refresh never wipes what the approver is typing.
  // `live`: this render comes from a refresh, so say so when someone else decided it.
  function renderReviewDetail(review, live = false) {
    const pane = $('review-detail');
    if (!pane) return;
    const json = JSON.stringify(review);
    if (json === state.lastDetailJson) return;
    state.lastDetailJson = json;
    const info = reviewInfo(review);
    const old = pane.querySelector('.review-actions');
    const sameReview = old && old.dataset.reviewId === review.id;
    const keepForms = sameReview && review.status === 'pending_review';
    const actions = keepForms ? old : reviewActions(review);
    pane.replaceChildren(info, actions || '');
    if (live && sameReview && !keepForms) {
      showStatus(`Review ${shortId(review.id)} is now ${review.status}`);
    }
  }

  function reviewInfo(r) {
    // The server's escaped form, escaped again here: a character the server's list lacks
    // is still shown, and the warning still says so.
    const shown = visible(r.statement_visible);
    const hidden = r.statement_visible !== r.statement || shown !== r.statement;
    const approvalsSoFar = `${(r.approvals || []).length} of ${r.min_approvals}`;
    return h('div', { class: 'review-info' },
      h('h2', { tabindex: '-1' }, `Review ${shortId(r.id)}`),
      h('p', { class: 'muted mono' }, visible(r.id, false)),
      dl([
        ['Status', h('span', { 'data-testid': 'review-status' }, badge(r.status))],
        ['Connection', visible(r.connection, false)],
        ['Requester', requester(r.requester)],
        ['Rule', visible(r.rule, false)],
        ['Message', r.message && h('span', { class: 'prewrap' }, visible(r.message))],
        ['Approvals', approvalsSoFar],
        ['Approver groups', visible((r.approver_groups || []).join(', '), false)],
        ['Created', timeEl(r.created_at)],
        ['Expires', timeEl(r.expires_at)],
        ['Run deadline', r.run_deadline && timeEl(r.run_deadline)],
        ['Max rows', r.max_rows ? String(r.max_rows) : null],
        ['Timeout', r.timeout_ms != null ? `${r.timeout_ms / 1000} s` : null],
        ['Max affected rows', r.max_affected_rows ?? null],
        ['Execution', h('span', { class: 'mono' }, visible(r.execution_id, false))],
      ], 'facts summary'),
      h('h3', {}, r.http ? 'Request' : 'Statement'),
      hidden && h('p', { class: 'warning' },
        'This statement contains invisible or control characters (shown escaped)'),
      h('pre', { class: 'statement', 'data-testid': 'statement' }, shown),
      h('h3', {}, 'Parameters'),
      params(r.params),
      r.http && httpRequest(r.http),
      h('h3', {}, 'What Airlock found'),
      factsList(r.facts || {}),
      (r.approvals || []).length > 0 && [h('h3', {}, 'Approvals so far'), approvalList(r.approvals)],
      r.rejection && [h('h3', {}, 'Rejection'), dl([
        ['Rejected by', who(r.rejection)],
        ['At', timeEl(r.rejection.at)],
        ['Reason', h('span', { class: 'prewrap' }, visible(r.rejection.reason))],
      ])],
      r.result && [h('h3', {}, 'Result'), genericFields(r.result)]);
  }

  // issuer/subject, kind, groups and, for delegated tokens, who acted on whose behalf
  // (the `act` chain lists the current actor first).
  function requester(p) {
    if (!p) return '';
    const lines = [h('span', {}, `${who(p)} (${visible(p.kind, false)})`)];
    if ((p.groups || []).length) lines.push(h('span', {}, `groups: ${visible(p.groups.join(', '), false)}`));
    if ((p.actor || []).length) {
      const chain = [...p.actor.map((a) => visible(a, false)), who(p)];
      lines.push(h('span', {}, `act chain: ${chain.join(' on behalf of ')}`));
    }
    return h('span', { class: 'stack' }, lines);
  }

  function params(values) {
    const box = h('div', { 'data-testid': 'params', class: 'params' });
    if (!values || !values.length) {
      box.append(h('p', { class: 'muted' }, 'No parameters.'));
      return box;
    }
    // JSON shows each value's type (a string in quotes, a number bare); visible() then
    // escapes what JSON.stringify leaves raw, such as U+202E.
    box.append(h('ol', { class: 'param-list' }, values.map((v) =>
      h('li', {}, h('code', { class: 'prewrap literal' }, visible(JSON.stringify(v)))))));
    return box;
  }

  function httpRequest(http) {
    // Every part is the agent's: escaped, and laid out left to right as stored.
    const literal = (text) => h('span', { class: 'mono literal' }, visible(text, false));
    const nameValues = (list) => (list || []).map((nv) => literal(`${nv.name}: ${nv.value}`));
    return [
      h('h3', {}, 'HTTP request'),
      dl([
        ['Method', literal(http.method)],
        ['Path', literal(http.path)],
        ['Query', nameValues(http.query).length ? h('span', { class: 'stack' }, nameValues(http.query)) : null],
        ['Headers', nameValues(http.headers).length ? h('span', { class: 'stack' }, nameValues(http.headers)) : null],
        ['Content type', http.content_type ? literal(http.content_type) : null],
        ['Body', http.body != null ? h('pre', { class: 'statement' }, visible(http.body)) : null],
      ]),
    ];
  }

  const FACT_LABELS = {
    kinds: 'Statement kinds', tables: 'Tables', tables_read: 'Tables read',
    tables_written: 'Tables written', functions: 'Functions', function_classes: 'Function classes',
    statement_count: 'Statements', missing_where: 'Missing WHERE', has_where: 'Has WHERE',
    nested_write: 'Nested write', unparsed: 'Unparsed', function_unlisted: 'Unlisted function',
    shell: 'Shell', command: 'Command', http: 'HTTP',
  };

  // Flags a reviewer should not miss: shown in the warning colour when set.
  const RISKY_FACTS = new Set(['missing_where', 'nested_write', 'unparsed', 'function_unlisted']);

  // Known facts first with readable labels; anything else the server adds still shows.
  function factsList(facts) {
    const pairs = [];
    const keys = [...Object.keys(FACT_LABELS).filter((k) => k in facts),
      ...Object.keys(facts).filter((k) => !(k in FACT_LABELS)).sort()];
    for (const key of keys) {
      const value = facts[key];
      if (value === false || value === null || (Array.isArray(value) && !value.length)) continue;
      const shown = RISKY_FACTS.has(key) && value === true ? h('strong', { class: 'risk' }, 'yes') : fieldValue(value);
      pairs.push([FACT_LABELS[key] || visible(key, false), shown]);
    }
    if (!pairs.length) return h('p', { class: 'muted' }, 'Nothing notable.');
    return dl(pairs);
  }

  function approvalList(approvals) {
    return h('ul', { class: 'plain-list' }, approvals.map((a) => h('li', {},
      h('strong', {}, who(a)), ' at ', timeEl(a.at),
      a.comment && h('span', { class: 'prewrap comment' }, `: ${visible(a.comment)}`))));
  }

  function reviewActions(review) {
    if (review.status !== 'pending_review') return null;
    const max = h('input', { type: 'number', name: 'max_affected_rows', min: '0', step: '1', inputmode: 'numeric' });
    const comment = h('textarea', { name: 'comment', rows: '2', maxlength: '2000' });
    const reason = h('textarea', { name: 'reason', rows: '2', required: true, maxlength: '2000' });
    return h('div', { class: 'review-actions', dataset: { reviewId: review.id } },
      h('form', { class: 'panel approve', onsubmit: (e) => onDecide(e, review.id, 'approve') },
        h('h3', {}, 'Approve'),
        field('Max affected rows (optional)', max,
          'A write that affects more rows than this is rolled back.'),
        field('Comment (optional)', comment),
        h('button', { type: 'submit', class: 'button-approve' }, 'Approve')),
      h('form', { class: 'panel reject', onsubmit: (e) => onDecide(e, review.id, 'reject') },
        h('h3', {}, 'Reject'),
        field('Reason', reason, 'The agent reads this: say what to change.'),
        h('button', { type: 'submit', class: 'button-reject' }, 'Reject')));
  }

  function decisionBody(form, action) {
    if (action === 'reject') {
      const reason = form.elements.reason.value.trim();
      if (!reason) throw new Error('Give a reason for the rejection.');
      return { reason };
    }
    const body = {};
    const max = form.elements.max_affected_rows.value.trim();
    if (max !== '') {
      const n = Number(max);
      if (!Number.isSafeInteger(n) || n < 0) throw new Error('Max affected rows must be a whole number, 0 or more.');
      body.max_affected_rows = n;
    }
    const comment = form.elements.comment.value.trim();
    if (comment) body.comment = comment;
    return body;
  }

  async function onDecide(event, id, action) {
    event.preventDefault();
    const form = event.currentTarget;
    clearMessages();
    let body;
    try {
      body = decisionBody(form, action);
    } catch (e) {
      showError(e.message);
      return;
    }
    setBusy(form, true);
    try {
      const review = await api(`/reviews/${encodeURIComponent(id)}/${action}`, { method: 'POST', body });
      form.reset(); // kept on screen while more approvals are needed; never sent twice
      if (action === 'reject') showStatus('Rejected');
      else if (review.status === 'pending_review') {
        showStatus(`Approved: ${(review.approvals || []).length} of ${review.min_approvals} approvals so far`);
      } else showStatus('Approved');
      if (state.reviewId === id) {
        renderReviewDetail(review);
        focusHeading($('review-detail').querySelector('h2'));
      }
      refreshReviews();
    } catch (e) {
      showError(e);
    } finally {
      if (form.isConnected) setBusy(form, false);
    }
  }

  // ---------------------------------------------------------------- live updates

  // Server-sent events say "something changed"; the 10 s poll covers a dropped stream.
  function startLive() {
    if (state.live || !state.me) return;
    state.livePaused = false;
    state.live = { stream: null, retry: null, failures: 0, timer: setInterval(pollTick, POLL_MS) };
    openEvents(state.live);
  }

  // EventSource cannot send the X-Airlock-CSRF header, so the stream is read with fetch()
  // and parsed here. `live.stream` is the AbortController of the open request.
  function openEvents(live) {
    const controller = new AbortController();
    live.stream = controller;
    live.retry = null;
    readEvents(live, controller);
  }

  async function readEvents(live, controller) {
    const current = () => state.live === live && live.stream === controller && !controller.signal.aborted;
    let res;
    try {
      res = await fetch(`${API}/reviews/events`, {
        headers: apiHeaders('text/event-stream', { background: true }),
        credentials: 'same-origin', cache: 'no-store', signal: controller.signal,
      });
    } catch {
      if (current()) reconnectLater(live);
      return;
    }
    if (!res.ok || !res.body) {
      // An error status (401, 403) is the poll's to report: its next call signs out, or
      // pollTick opens a new stream.
      controller.abort();
      if (state.live === live && live.stream === controller) live.stream = null;
      return;
    }
    live.failures = 0;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parse = eventStreamParser((type) => { if (type === 'reviews') scheduleRefresh(); });
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parse(decoder.decode(value, { stream: true }));
      }
    } catch { /* aborted, or the connection dropped */ }
    if (current()) reconnectLater(live);
  }

  // The stream ended (the server closes it every 5 minutes) or could not be opened:
  // try again soon, backing off while the server stays away.
  function reconnectLater(live) {
    live.stream = null;
    const delay = Math.min(STREAM_RETRY_MAX_MS, STREAM_RETRY_MS * 2 ** live.failures);
    live.failures += 1;
    live.retry = setTimeout(() => {
      if (state.live === live && !live.stream) openEvents(live);
    }, delay);
  }

  // A text/event-stream reader for what the console needs: `event:` names the event,
  // `data:` lines carry its payload, a blank line ends it, a line starting with `:` is a
  // keep-alive. Returns a function to feed the decoded text to, chunk by chunk.
  function eventStreamParser(onEvent) {
    let pending = '';
    let type = '';
    let data = [];
    return (chunk) => {
      pending += chunk;
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      const cut = pending.endsWith('\r') ? pending.length - 1 : pending.length;
      const lines = pending.slice(0, cut).split(/\r\n|\r|\n/);
      pending = lines.pop() + pending.slice(cut);
      for (const line of lines) {
        if (line === '') {
          if (type || data.length) onEvent(type || 'message', data.join('\n'));
          type = '';
          data = [];
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const name = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (name === 'event') type = value;
          else if (name === 'data') data.push(value);
        }
      }
    };
  }

  function stopLive() {
    if (!state.live) return;
    if (state.live.stream) state.live.stream.abort();
    clearTimeout(state.live.retry);
    clearInterval(state.live.timer);
    clearTimeout(state.refreshTimer);
    state.live = null;
  }

  // Bursts of events (several approvals at once) become one refresh.
  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refreshLive, 250);
  }

  async function refreshLive() {
    if (state.view !== 'reviews') return;
    const id = state.reviewId;
    await refreshReviews(true);
    if (id && state.reviewId === id) {
      const review = await fetchReview(id, true);
      if (review && state.reviewId === id) renderReviewDetail(review, true);
    }
  }

  // An unattended console must not keep its session alive forever by polling: after the
  // server's idle timeout without any keyboard or pointer input, live updates pause until
  // the person comes back.
  function pollTick() {
    const idleMs = (state.me && state.me.idle_timeout_secs || 0) * 1000;
    if (idleMs && Date.now() - state.lastActivity > idleMs) {
      stopLive();
      state.livePaused = true;
      const note = $('live-note');
      if (note) note.textContent = 'Live updates paused while you are away.';
      return;
    }
    if (state.live && !state.live.stream && !state.live.retry) openEvents(state.live);
    if (!document.hidden) refreshLive();
  }

  function noteActivity() {
    state.lastActivity = Date.now();
    if (state.livePaused && state.view === 'reviews') {
      startLive();
      refreshLive();
    }
  }

  // ---------------------------------------------------------------- audit

  function mountAudit(navigated) {
    if (!state.me.auditor) {
      const heading = mountView('audit', 'Audit',
        h('p', {}, 'The audit log is open to auditors only (principals listed in audit.readers).'));
      if (navigated) focusHeading(heading);
      return;
    }
    const text = (name) => h('input', { type: 'text', name, autocomplete: 'off', spellcheck: 'false' });
    const outcome = h('select', { name: 'outcome' },
      h('option', { value: '' }, 'Any'), OUTCOMES.map((o) => h('option', { value: o }, o)));
    const form = h('form', { class: 'panel search-form', role: 'search', 'aria-label': 'Audit log', onsubmit: onAuditSearch },
      h('div', { class: 'field-grid' },
        field('Connection', text('connection')),
        field('Issuer', text('issuer')),
        field('Subject', text('subject')),
        field('Outcome', outcome),
        field('Execution id', text('execution_id')),
        field('Since', h('input', { type: 'datetime-local', name: 'since', step: '1' })),
        field('Until', h('input', { type: 'datetime-local', name: 'until', step: '1' }))),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit' }, 'Search')),
      h('p', { class: 'hint' }, 'Since and Until are in your local time.'));
    // The execution pane sits above the results: opening one from a long table should not
    // send the reader to the bottom of the page.
    const heading = mountView('audit', 'Audit', form,
      h('section', { id: 'execution', class: 'detail execution', 'aria-label': 'Execution', hidden: true }),
      h('div', { id: 'audit-results' }),
      h('div', { id: 'audit-more', class: 'more' }));
    searchAudit(auditQuery(form));
    if (navigated) focusHeading(heading);
  }

  // datetime-local gives local wall time without a zone; the API wants RFC 3339 UTC.
  function toRfc3339(local) {
    if (!local) return '';
    const date = new Date(local);
    return Number.isNaN(date.getTime()) ? '' : date.toISOString().replace('.000Z', 'Z');
  }

  function auditQuery(form) {
    const value = (name) => form.elements[name].value.trim();
    return {
      connection: value('connection'), issuer: value('issuer'), subject: value('subject'),
      outcome: value('outcome'), execution_id: value('execution_id'),
      since: toRfc3339(value('since')), until: toRfc3339(value('until')), limit: 50,
    };
  }

  function onAuditSearch(event) {
    event.preventDefault();
    clearMessages();
    searchAudit(auditQuery(event.currentTarget));
  }

  async function searchAudit(query) {
    state.audit = { query, cursor: null, shownExecutions: new Set() };
    $('audit-results').replaceChildren(h('p', { class: 'muted' }, 'Searching…'));
    $('audit-more').replaceChildren();
    await loadAuditPage(false);
  }

  async function loadAuditPage(append) {
    const seq = state.seq;
    const audit = state.audit;
    let page;
    try {
      page = await api('/audit', { query: { ...audit.query, cursor: audit.cursor } });
    } catch (e) {
      if (seq === state.seq && !append) $('audit-results').replaceChildren();
      showError(e);
      return;
    }
    if (seq !== state.seq || audit !== state.audit) return;
    audit.cursor = page.next_cursor || null;
    const results = $('audit-results');
    let tbody = results.querySelector('tbody');
    if (!append || !tbody) {
      if (!page.events.length) {
        results.replaceChildren(h('p', { class: 'empty' }, 'No audit events match.'));
      } else {
        results.replaceChildren(table('Audit events', ['Time', 'Phase', 'Execution', 'Connection',
          'Principal', 'Operation', 'Outcome / decision', 'Statement / command'], []));
        tbody = results.querySelector('tbody');
      }
    }
    if (tbody) tbody.append(...page.events.map(auditRow));
    $('audit-more').replaceChildren(audit.cursor
      ? h('button', { type: 'button', class: 'button-quiet', onclick: onOlderEvents }, 'Older events') : '');
  }

  async function onOlderEvents(event) {
    const button = event.currentTarget;
    button.disabled = true;
    const lastRow = $('audit-results').querySelector('tbody tr:last-child');
    await loadAuditPage(true);
    if (button.isConnected) button.disabled = false; // the page failed to load: try again
    // Keep the keyboard user in place: the button moved below the new rows.
    const next = lastRow && lastRow.nextElementSibling;
    const target = (next && next.querySelector('button')) || $('audit-more').querySelector('button');
    if (target) target.focus();
  }

  function auditRow(ev) {
    const shown = state.audit.shownExecutions;
    // One "Show execution" button per execution: its begin and end rows share the id.
    const execCell = shown.has(ev.execution_id)
      ? h('span', { class: 'mono muted', title: visible(ev.execution_id, false) }, visible(shortId(ev.execution_id), false))
      : h('button', { type: 'button', class: 'button-link', onclick: (e) => showExecution(ev.execution_id, e.currentTarget) },
        h('span', { class: 'visually-hidden' }, 'Show execution '), h('span', { class: 'mono' }, visible(shortId(ev.execution_id), false)));
    shown.add(ev.execution_id);
    const text = ev.statement ?? ev.submitted ?? ev.reason ?? '';
    return h('tr', {},
      h('td', {}, timeEl(ev.time, true)),
      h('td', {}, visible(ev.phase, false)),
      h('td', {}, execCell),
      h('td', {}, visible(ev.connection, false)),
      h('td', { class: 'nowrap' }, who(ev.principal)),
      h('td', {}, visible(ev.operation, false)),
      h('td', {}, outcomeCell(ev)),
      h('td', { class: 'mono clip', title: visible(text) }, oneLine(text, 70)));
  }

  function outcomeCell(ev) {
    const parts = [];
    if (ev.decision) parts.push(badge(ev.decision));
    if (ev.outcome) parts.push(badge(ev.outcome));
    return parts.length ? h('span', { class: 'badges' }, parts) : '';
  }

  // Fetches every event of one execution and lays them out with begin and end side by
  // side; a reviewed request has two pairs (the held request, then the run) and events.
  async function showExecution(executionId, opener) {
    const seq = state.seq;
    state.audit.opener = opener;
    const pane = $('execution');
    pane.hidden = false;
    pane.replaceChildren(h('p', { class: 'muted' }, 'Loading execution…'));
    let page;
    try {
      page = await api('/audit', { query: { execution_id: executionId, limit: 100 } });
    } catch (e) {
      pane.replaceChildren();
      pane.hidden = true;
      showError(e);
      return;
    }
    if (seq !== state.seq) return;
    const events = [...page.events].sort((a, b) =>
      (a.seq ?? 0) - (b.seq ?? 0) || String(a.time).localeCompare(String(b.time)));
    const heading = h('h2', { tabindex: '-1' }, `Execution ${shortId(executionId)}`);
    pane.replaceChildren(heading,
      h('p', { class: 'muted mono' }, executionId),
      executionGrid(events),
      h('button', { type: 'button', class: 'button-quiet', onclick: closeExecution }, 'Close execution'));
    focusHeading(heading);
  }

  // Closing returns focus to the button that opened it (if a new search has not removed it).
  function closeExecution() {
    const pane = $('execution');
    pane.hidden = true;
    pane.replaceChildren();
    const opener = state.audit && state.audit.opener;
    if (opener && opener.isConnected) opener.focus();
    else focusHeading(document.querySelector('#view h1'));
  }

  function executionGrid(events) {
    const grid = h('div', { class: 'side-by-side' },
      h('h3', { class: 'col-head' }, 'Begin'), h('h3', { class: 'col-head' }, 'End'));
    let open = null; // a begin card waiting for its end
    const place = (card, cls) => { card.classList.add(cls); grid.append(card); };
    for (const ev of events) {
      if (ev.phase === 'begin') {
        if (open) place(h('div', { class: 'event-card missing' }, 'No end event yet.'), 'col-end');
        open = eventCard(ev);
        place(open, 'col-begin');
      } else if (ev.phase === 'end') {
        if (!open) place(h('div', { class: 'event-card missing' }, 'No begin event.'), 'col-begin');
        place(eventCard(ev), 'col-end');
        open = null;
      } else {
        if (open) { place(h('div', { class: 'event-card missing' }, 'Not ended yet.'), 'col-end'); open = null; }
        place(eventCard(ev), 'col-span');
      }
    }
    if (open) place(h('div', { class: 'event-card missing' }, 'No end event yet.'), 'col-end');
    if (!events.length) grid.append(h('p', { class: 'empty col-span' }, 'No events for this execution.'));
    return grid;
  }

  function eventCard(ev) {
    const keys = Object.keys(ev).filter((k) => k !== 'phase');
    const ordered = [
      ...AUDIT_FIELD_ORDER.filter((k) => keys.includes(k)),
      ...keys.filter((k) => !AUDIT_FIELD_ORDER.includes(k) && !AUDIT_FIELD_LAST.includes(k)).sort(),
      ...AUDIT_FIELD_LAST.filter((k) => keys.includes(k)),
    ];
    return h('div', { class: 'event-card' },
      h('p', { class: 'event-phase' }, badge(ev.phase), ' ', timeEl(ev.time)),
      dl(ordered.filter((k) => k !== 'time').map((k) => [visible(k, false), fieldValue(ev[k], k)])));
  }

  // Renders any JSON value as text: unknown fields still show, never as HTML.
  function fieldValue(value, key) {
    if (value === null || value === undefined) return null;
    if (key && /(^|_)(time|at)$/.test(key) && typeof value === 'string') return timeEl(value);
    if (key === 'principal' && typeof value === 'object') return requester(value);
    if (typeof value === 'boolean') return value ? 'yes' : 'no';
    if (typeof value === 'number') return String(value);
    if (typeof value === 'string') {
      // Statements and people's words keep their line breaks; a name or an id is one line.
      if (CODE_FIELDS.has(key)) return h('span', { class: 'prewrap mono literal' }, visible(value));
      if (TEXT_FIELDS.has(key)) return h('span', { class: 'prewrap' }, visible(value));
      return h('span', { class: 'prewrap' }, visible(value, false));
    }
    if (Array.isArray(value) && value.every((v) => typeof v !== 'object' || v === null)) {
      return h('span', { class: 'prewrap' }, visible(value.join(', '), false));
    }
    return h('pre', { class: 'json' }, visible(JSON.stringify(value, null, 2)));
  }

  function genericFields(obj) {
    if (typeof obj !== 'object' || obj === null) return h('p', {}, String(obj));
    return dl(Object.keys(obj).sort().map((k) => [visible(k, false), fieldValue(obj[k], k)]));
  }

  // ---------------------------------------------------------------- sessions

  function mountSessions(navigated) {
    const heading = mountView('sessions', 'Sessions',
      h('div', { id: 'session-list' }, h('p', { class: 'muted' }, 'Loading sessions…')),
      h('div', { id: 'session-more', class: 'more' }),
      h('section', { id: 'replay', class: 'detail', 'aria-label': 'Replay', hidden: true }));
    state.sessionsCursor = null;
    loadSessions(false);
    if (navigated) focusHeading(heading);
  }

  async function loadSessions(append) {
    const seq = state.seq;
    let page;
    try {
      page = await api('/sessions', { query: { limit: 50, cursor: append ? state.sessionsCursor : null } });
    } catch (e) {
      showError(e);
      return;
    }
    if (seq !== state.seq) return;
    state.sessionsCursor = page.next_cursor || null;
    const list = $('session-list');
    let tbody = list.querySelector('tbody');
    if (!append || !tbody) {
      if (!page.sessions.length) {
        list.replaceChildren(h('p', { class: 'empty' }, 'No recorded sessions.'));
      } else {
        list.replaceChildren(table('Sessions',
          ['Started', 'Connection', 'Subject', 'Command', 'Status', 'Exit code', 'Recording'], []));
        tbody = list.querySelector('tbody');
      }
    }
    if (tbody) tbody.append(...page.sessions.map(sessionRow));
    $('session-more').replaceChildren(state.sessionsCursor
      ? h('button', { type: 'button', class: 'button-quiet', onclick: () => loadSessions(true) }, 'Older sessions') : '');
  }

  function sessionRow(s) {
    return h('tr', { dataset: { sessionId: s.id } },
      h('td', {}, timeEl(s.started_at, true)),
      h('td', {}, visible(s.connection, false)),
      h('td', { class: 'nowrap' }, who(s)),
      h('td', { class: 'mono clip', title: visible(s.command || '') },
        s.command ? oneLine(s.command, 60) : h('span', { class: 'muted' }, s.kind === 'shell' ? '(shell)' : '—')),
      h('td', {}, badge(s.status)),
      h('td', {}, visible(s.exit_code, false)),
      h('td', {}, h('button', { type: 'button', class: 'button-quiet', onclick: () => replay(s.id) },
        'Replay', h('span', { class: 'visually-hidden' }, ` session ${shortId(s.id)}`))));
  }

  function disposePlayer() {
    if (!state.player) return;
    try { state.player.dispose(); } catch { /* already gone with its element */ }
    state.player = null;
  }

  async function replay(id) {
    const seq = state.seq;
    const mine = ++state.replaySeq; // a later click wins over a slower earlier one
    disposePlayer();
    const pane = $('replay');
    pane.hidden = false;
    pane.replaceChildren(h('p', { class: 'muted' }, 'Loading session…'));
    let session;
    try {
      session = await api(`/sessions/${encodeURIComponent(id)}`);
    } catch (e) {
      pane.hidden = true;
      showError(e);
      return;
    }
    if (seq !== state.seq || mine !== state.replaySeq) return;
    disposePlayer();
    for (const row of document.querySelectorAll('#session-list tbody tr')) {
      row.classList.toggle('selected', row.dataset.sessionId === id);
    }
    const chain = session.chain_valid === true ? 'Recording chain valid'
      : session.chain_valid === false ? 'Recording chain BROKEN' : 'Recording chain not checked';
    const heading = h('h2', { tabindex: '-1' }, `Session ${shortId(session.id)}`);
    const playerEl = h('div', { class: 'player', 'data-testid': 'player' },
      h('p', { class: 'muted' }, 'Loading recording…'));
    pane.replaceChildren(heading,
      h('p', { class: `chain ${session.chain_valid === false ? 'chain-broken' : 'chain-ok'}`, 'data-testid': 'chain' }, chain),
      dl([
        ['Kind', visible(session.kind, false)],
        ['Connection', visible(session.connection, false)],
        ['Subject', who(session)],
        ['Command', session.command ? h('span', { class: 'mono prewrap literal' }, visible(session.command)) : null],
        ['Started', timeEl(session.started_at)],
        ['Ended', session.ended_at ? timeEl(session.ended_at) : null],
        ['Status', badge(session.status)],
        ['Exit code', session.exit_code ?? null],
        ['Execution', h('span', { class: 'mono' }, visible(session.execution_id, false))],
        ['Digest', session.digest ? h('span', { class: 'mono break' }, visible(session.digest, false)) : null],
      ], 'facts summary'),
      playerEl);
    focusHeading(heading);
    await startPlayer(session.id, playerEl, () => seq === state.seq && mine === state.replaySeq);
  }

  // The player gets the recording as text, fetched here with the session proof: its own
  // fetch could not send the header, and no URL may carry a token.
  async function startPlayer(id, playerEl, stillWanted) {
    let text;
    try {
      text = await api(`/sessions/${encodeURIComponent(id)}/recording`, { as: 'text' });
    } catch (e) {
      if (!stillWanted()) return;
      playerEl.replaceChildren(h('p', { class: 'muted' }, 'The recording could not be loaded.'));
      showError(e);
      return;
    }
    if (!stillWanted()) return;
    playerEl.replaceChildren();
    if (typeof window.AsciinemaPlayer === 'undefined') {
      playerEl.append(h('p', { class: 'muted' }, 'The session player did not load.'));
      showError('The session player did not load.');
      return;
    }
    disposePlayer();
    state.player = window.AsciinemaPlayer.create({ data: text }, playerEl, { fit: 'width', autoPlay: true });
  }

  // ---------------------------------------------------------------- start

  async function boot() {
    $('sign-out').addEventListener('click', onSignOut);
    // The skip link targets #main, which is not a route: move focus without touching the hash.
    $('skip-link').addEventListener('click', (event) => {
      event.preventDefault();
      $('main').focus();
    });
    window.addEventListener('hashchange', () => {
      const fragment = consumeFragment();
      if (fragment) return handleFragment(fragment);
      route(true);
    });
    for (const type of ['keydown', 'pointerdown', 'wheel']) {
      document.addEventListener(type, noteActivity, { passive: true, capture: true });
    }
    window.addEventListener('storage', onStorage);

    const fragment = consumeFragment();
    if (fragment) return handleFragment(fragment);
    await loadSession();
  }

  async function handleFragment({ linkCode, sessionToken, loginError }) {
    if (linkCode !== undefined) return useSignInLink(linkCode);
    if (sessionToken !== undefined) return adoptSession(sessionToken);
    if (!state.me) await loadSession();
    showError(loginErrorText(loginError));
  }

  // A one-time sign-in link. Someone already signed in keeps their identity: a link
  // someone else sent must not silently switch whose name the approvals carry.
  async function useSignInLink(code) {
    if (await loadSession()) {
      showStatus(`You are already signed in as ${who(state.me.principal)}; ` +
        'sign out first to use a sign-in link.');
      return;
    }
    if (!code) return showError('This sign-in link is incomplete.');
    await signInWith('/login/link', { code });
  }

  // An OIDC sign-in ends on #session=<csrf_token>. The token is kept only if /me accepts
  // it: a crafted link with a wrong token must not throw away the session this browser has.
  async function adoptSession(token) {
    try {
      const me = await api('/me', { signOutOn401: false, proof: token });
      signedIn({ ...me, csrf_token: me.csrf_token || token });
      return;
    } catch (e) {
      if (await loadSession()) return;
      showError(sessionGone(e) ? 'This sign-in did not start a session. Sign in again.' : e);
    }
  }

  // Boot, and after a fragment: with a stored session proof, ask /me who this is; without
  // one there is no session worth asking about. True when signed in.
  async function loadSession() {
    state.csrf = storedCsrf();
    if (!state.csrf) {
      if (state.me) signedOut();
      else if (state.view !== 'signin') renderSignIn();
      return false;
    }
    try {
      signedIn(await api('/me', { signOutOn401: false }));
      return true;
    } catch (e) {
      if (sessionGone(e)) {
        signedOut();
        return false;
      }
      // The server could not be asked (down, 5xx): keep the token, a reload may work.
      if (state.view !== 'signin') renderSignIn();
      showError(e);
      return false;
    }
  }

  // Another tab of this origin signed in or out (they share the cookie): follow it, so the
  // name shown here is always the one the server will record.
  function onStorage(event) {
    if (event.key !== CSRF_KEY && event.key !== null) return;
    const token = storedCsrf();
    if (token === state.csrf) return;
    if (!token) {
      if (state.me) signedOut('You signed out in another tab.');
      return;
    }
    loadSession();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
