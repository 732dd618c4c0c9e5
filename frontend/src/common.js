// Shared by the viewer pages: the token lives in sessionStorage["medcloud.token"], as on the hub's
// other pages; without one the page shows a sign-in box and loads nothing.
//
// Signing in with the hospital account (where the hub offers it) is the research page's: the button sends
// the browser to the hub's /auth/login with return_to=/research?next=<this viewer page>; the research page
// trades the hand-over for a session token, holds it at the passkey step, and once the session may be used
// goes back to `next` (a path under /viewer/ only). One sign-in and passkey flow, kept in sso.js and
// passkey.js; signing out here ends a hospital session at the hub and the provider (sso.js).
import { hospitalSignOut, keepHospitalSessionFresh } from "../../src/medcloud/web/sso.js";

export const TOKEN_KEY = "medcloud.token";

export const $ = (id) => document.getElementById(id);

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export class HttpError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

/** fetch with the bearer token; problem+json errors become HttpError with the server's detail. */
export async function api(url, accept = "application/json") {
  const r = await fetch(url, { headers: { Authorization: `Bearer ${token()}`, Accept: accept } });
  if (!r.ok) {
    let detail = "";
    try {
      const body = await r.json();
      detail = body.detail || body.title || "";
    } catch {
      /* not JSON */
    }
    throw new HttpError(r.status, detail);
  }
  if (r.status === 204) return [];
  return r.json();
}

export function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
  document.body.dataset.error = "yes";
}

/** Wires the sign-in form and sign-out button; resolves true when there is a token to try. */
export function setUpSignIn() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    location.reload();
  });
  $("signout").addEventListener("click", async () => {
    const leaving = hospitalSignOut(TOKEN_KEY); // reads the token before it is removed below
    sessionStorage.removeItem(TOKEN_KEY);
    if (!(await leaving)) location.reload(); // else the browser is on its way to the provider's sign-out
  });
  offerHospitalSignIn().catch((err) => console.warn(err));
  if (!token()) {
    askForToken();
    return false;
  }
  $("signout").hidden = false;
  // A hospital-account session is refreshed here as on the research page; once the hub refuses (idle,
  // maximum reached, revoked at the provider) the page asks to sign in again.
  keepHospitalSessionFresh(TOKEN_KEY, (reason) => {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(`Your session ended: ${reason}. Sign in again. / セッションが終了しました。`);
  });
  return true;
}

/** The research page's address that signs in and comes back to this viewer page (see the top of this file). */
export function hospitalReturnTo(here = location) {
  return `/research?next=${encodeURIComponent(here.pathname + here.search)}`;
}

/** Shows "Sign in with hospital account" when GET /api/v1/auth/config says the hub offers it. */
async function offerHospitalSignIn() {
  const response = await fetch("/api/v1/auth/config", { credentials: "omit", cache: "no-store" });
  const config = response.ok ? await response.json() : {};
  document.body.dataset.sso = config.oidc && config.login_url ? "yes" : "no";
  if (document.body.dataset.sso !== "yes") return;
  $("sso-button").addEventListener("click", () => {
    location.assign(`${config.login_url}?return_to=${encodeURIComponent(hospitalReturnTo())}`);
  });
  $("sso").hidden = false;
}

/** Shows the sign-in box (no token, or a token the hub refused) and hides any data. */
export function askForToken(message) {
  $("workspace").hidden = true;
  $("signin").hidden = false;
  document.body.dataset.signedIn = "no";
  if (message) showError(message);
  $("token").focus();
}

/** Turns an error into what the user sees: a refused token sends them back to sign in. */
export function reportFailure(err) {
  console.warn(err);
  if (err instanceof HttpError && err.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken("The hub refused this token (expired or unknown). Sign in again. / トークンが拒否されました。");
  } else if (err instanceof HttpError && err.status === 403) {
    showError(`Not allowed: ${err.message} / 権限がありません`);
  } else if (err instanceof HttpError && err.status === 404) {
    showError(`Not found: ${err.message} / 見つかりません`);
  } else {
    showError(`Could not load: ${err.message || err}`);
  }
  document.body.dataset.ready = "failed";
}
