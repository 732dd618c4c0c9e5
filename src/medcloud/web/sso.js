// Sign-in with the hospital account (OpenID Connect) beside the token field, where the hub offers it.
//
// The hub sends the browser to the hospital's identity provider (/auth/login) and back (/auth/callback),
// which returns to this page with "#signin" and a one-time hand-over code in an HttpOnly cookie that only
// POST /api/v1/auth/session sees. That POST answers with a short-lived session token, kept like a pasted
// token in this tab's sessionStorage; it is refreshed through the provider before it ends, and signing out
// ends it at the hub and at the provider. No token ever appears in a URL.

const SESSION_KEY = "medcloud.session"; // "yes" while the token is a hospital-account session
const EXPIRES_KEY = "medcloud.session.expires"; // when the session token ends unless refreshed (ISO time)
const REFRESH_AT = 0.75; // refresh when three quarters of the token's life have passed
let refreshTimer = null;

async function postJson(path, token) {
  const headers = new Headers({ Accept: "application/json" });
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, { method: "POST", headers, credentials: "same-origin", cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || body.title || `HTTP ${response.status}`);
  return body;
}

// The hub refuses a refresh once the session has been idle (a refresh is not a use), so an unattended
// page signs out at the idle timeout; in use, the session lasts until its maximum.
function scheduleRefresh(tokenKey, expiresAt, onEnded) {
  clearTimeout(refreshTimer);
  if (expiresAt) sessionStorage.setItem(EXPIRES_KEY, expiresAt);
  const left = Date.parse(expiresAt) - Date.now();
  if (!(left > 0)) return;
  refreshTimer = setTimeout(async () => {
    const token = sessionStorage.getItem(tokenKey);
    if (!token || sessionStorage.getItem(SESSION_KEY) !== "yes") return;
    try {
      const body = await postJson("/api/v1/auth/refresh", token);
      scheduleRefresh(tokenKey, body.expires_at, onEnded);
    } catch (err) {
      onEnded(err.message);
    }
  }, Math.max(5000, left * REFRESH_AT));
}

// Every page of this tab keeps a hospital-account session it holds fresh (the hub's pages and the viewer
// pages share the tab's sessionStorage): call once at load. Nothing for a pasted machine token.
export function keepHospitalSessionFresh(tokenKey, onEnded) {
  if (sessionStorage.getItem(SESSION_KEY) !== "yes" || !sessionStorage.getItem(tokenKey)) return;
  const expiresAt = sessionStorage.getItem(EXPIRES_KEY);
  if (expiresAt) scheduleRefresh(tokenKey, expiresAt, onEnded);
}

// Shows the button when the hub offers hospital sign-in, and completes a sign-in on the way back.
// `onSignedIn()` runs once a session token is stored; `onEnded(message)` when the provider ends it.
export async function setupHospitalSignIn({ tokenKey, button, returnTo, onSignedIn, onEnded }) {
  let config = {};
  try {
    const response = await fetch("/api/v1/auth/config", { credentials: "omit", cache: "no-store" });
    config = await response.json();
  } catch {
    return;
  }
  if (!config.oidc) return;
  button.hidden = false;
  button.addEventListener("click", () => {
    window.location.assign(`${config.login_url}?return_to=${encodeURIComponent(returnTo)}`);
  });
  if (window.location.hash !== "#signin") {
    keepHospitalSessionFresh(tokenKey, onEnded); // a session from before this page was (re)loaded
  } else {
    history.replaceState(null, "", window.location.pathname + window.location.search);
    const session = await postJson("/api/v1/auth/session");
    sessionStorage.setItem(tokenKey, session.token);
    sessionStorage.setItem(SESSION_KEY, "yes");
    scheduleRefresh(tokenKey, session.expires_at, onEnded);
    await onSignedIn(session);
  }
}

// Signing out of a hospital-account session: revoke it at the hub, then end it at the provider.
// Resolves true when the browser is being sent to the provider's sign-out page.
export async function hospitalSignOut(tokenKey) {
  clearTimeout(refreshTimer);
  const token = sessionStorage.getItem(tokenKey);
  const wasSession = sessionStorage.getItem(SESSION_KEY) === "yes";
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(EXPIRES_KEY);
  if (!wasSession || !token) return false;
  try {
    const body = await postJson("/api/v1/auth/logout", token);
    if (body.end_session_url) {
      window.location.assign(body.end_session_url);
      return true;
    }
  } catch {
    // Already ended (expired, idle, revoked): nothing more to end here.
  }
  return false;
}
