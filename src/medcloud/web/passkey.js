// Passkeys (WebAuthn) on the hub's pages: the second factor of a person's session.
// The hub makes every challenge and checks every answer (/api/v1/auth/webauthn/...); this module only
// carries them between the hub and the browser's authenticator. Used by app.js and research.js.

const BASE = "/api/v1/auth/webauthn";

export const PASSKEY_TEXT = {
  en: {
    "passkey.h": "Second factor: passkey",
    "passkey.use": "Use passkey",
    "passkey.register": "Register passkey",
    "passkey.needed": "This session needs your passkey before it can be used.",
    "passkey.enrol": "Register a passkey for your account (security key, phone or this computer), then use it.",
    "passkey.enrol-expired": "A first passkey can be registered only right after signing in: sign out and in again.",
    "passkey.ok": "Passkey checked. You can register another passkey here.",
    "passkey.working": "Waiting for your passkey…",
    "passkey.registered": "Passkey registered. Now use it to finish signing in.",
    "passkey.failed": "Passkey step failed: {error}",
    "passkey.code-label": "Enrolment code from your administrator",
    "passkey.code-register": "Register passkey with code",
  },
  ja: {
    "passkey.h": "二要素認証：パスキー",
    "passkey.use": "パスキーを使う",
    "passkey.register": "パスキーを登録",
    "passkey.needed": "このセッションを使うには、パスキーによる確認が必要です。",
    "passkey.enrol": "アカウントにパスキー（セキュリティキー、スマートフォン、このコンピューター）を登録してから使ってください。",
    "passkey.enrol-expired": "最初のパスキーはサインイン直後にのみ登録できます。サインアウトしてもう一度サインインしてください。",
    "passkey.ok": "パスキーで確認済みです。ここで別のパスキーも登録できます。",
    "passkey.working": "パスキーの操作を待っています…",
    "passkey.registered": "パスキーを登録しました。続けてパスキーを使ってサインインを完了してください。",
    "passkey.failed": "パスキーの手順に失敗しました: {error}",
    "passkey.code-label": "管理者から受け取った登録コード",
    "passkey.code-register": "コードでパスキーを登録",
  },
};

/** A passkey label in `lang` (English where a translation is missing), with {name} filled in. */
export function passkeyText(lang, key, values = {}) {
  const text = (PASSKEY_TEXT[lang] || PASSKEY_TEXT.en)[key] ?? PASSKEY_TEXT.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
}

function toBuffer(b64url) {
  const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (b64url.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
}

function toB64url(buffer) {
  let text = "";
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function post(path, token, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = new Error(json.detail || json.title || `HTTP ${response.status}`);
    err.status = response.status;
    throw err;
  }
  return json;
}

function descriptors(list) {
  return (list || []).map((c) => ({ ...c, id: toBuffer(c.id) }));
}

/** A credential as the hub's verify routes read it (WebAuthn's JSON form): the fields every credential has,
 * plus `response`'s own fields, which differ between registration and sign-in. */
function credentialJSON(credential, responseFields) {
  return {
    id: credential.id,
    rawId: toB64url(credential.rawId),
    type: credential.type,
    clientExtensionResults: credential.getClientExtensionResults(),
    response: { clientDataJSON: toB64url(credential.response.clientDataJSON), ...responseFields },
  };
}

/** Create a passkey for the signed-in person and store it on the hub. */
export async function registerPasskey(token) {
  const options = await post(`${BASE}/register/options`, token);
  const publicKey = {
    ...options,
    challenge: toBuffer(options.challenge),
    user: { ...options.user, id: toBuffer(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  };
  const credential = await navigator.credentials.create({ publicKey });
  const response = credential.response;
  return post(`${BASE}/register/verify`, token, {
    credential: credentialJSON(credential, {
      attestationObject: toB64url(response.attestationObject),
      transports: typeof response.getTransports === "function" ? response.getTransports() : [],
    }),
  });
}

/** Redeem an administrator's one-time enrolment code, then create a passkey under it. */
export async function registerWithCode(token, code) {
  await post(`${BASE}/enrolment-codes/redeem`, token, { code });
  return registerPasskey(token);
}

/** Sign in with one of the person's passkeys: the session passes its second factor. */
export async function usePasskey(token) {
  const options = await post(`${BASE}/authenticate/options`, token);
  const publicKey = {
    ...options,
    challenge: toBuffer(options.challenge),
    allowCredentials: descriptors(options.allowCredentials),
  };
  const credential = await navigator.credentials.get({ publicKey });
  const response = credential.response;
  return post(`${BASE}/authenticate/verify`, token, {
    credential: credentialJSON(credential, {
      authenticatorData: toB64url(response.authenticatorData),
      signature: toB64url(response.signature),
      userHandle: response.userHandle ? toB64url(response.userHandle) : null,
    }),
  });
}

/** Whether whoami's answer holds the page back until the passkey step is done. */
export function passkeyBlocks(whoami) {
  const sf = (whoami && whoami.second_factor) || {};
  return Boolean(sf.required) && sf.state !== "ok" && sf.state !== "not-applicable";
}

/**
 * The passkey panel (#passkey, #passkey-status, #passkey-use, #passkey-register) of a page.
 * `token()` gives the session token, `text(key, values)` a label, `onPassed()` reloads the page's data
 * once the second factor is done. Returns `show(whoami)`, which says whether the page must wait.
 */
export function passkeyPanel({ token, text, onPassed }) {
  const $ = (id) => document.getElementById(id);
  let current = null;

  function say(key, values = {}, isError = false) {
    const node = $("passkey-status");
    node.textContent = text(key, values);
    node.classList.toggle("error", isError);
    node.dataset.state = key;
  }

  function show(whoami) {
    current = whoami;
    const sf = (whoami && whoami.second_factor) || { state: "not-applicable" };
    const session = sf.state !== "not-applicable";
    $("passkey").hidden = !session;
    $("passkey-h").textContent = text("passkey.h");
    $("passkey-use").textContent = text("passkey.use");
    $("passkey-register").textContent = text("passkey.register");
    $("passkey-code-label").textContent = text("passkey.code-label");
    $("passkey-code-register").textContent = text("passkey.code-register");
    if (!session) return false;
    // Outside the first-enrolment window, or with a passkey that is lost: an administrator's code.
    $("passkey-code-form").hidden = !(sf.state === "enrol-expired" || sf.state === "needed");
    $("passkey-use").hidden = !(sf.state === "needed" || (sf.state === "ok" && sf.passkeys > 0 && !sf.admin_fresh));
    $("passkey-register").hidden = !(sf.state === "enrol" || sf.state === "ok");
    say(`passkey.${sf.state}`);
    return passkeyBlocks(whoami);
  }

  async function run(action, doneKey) {
    $("passkey-use").disabled = true;
    $("passkey-register").disabled = true;
    $("passkey-code-register").disabled = true;
    say("passkey.working");
    try {
      await action(token());
      const blocked = !(await onPassed());
      if (doneKey && blocked) say(doneKey);
    } catch (err) {
      say("passkey.failed", { error: err.message || String(err) }, true);
    } finally {
      $("passkey-use").disabled = false;
      $("passkey-register").disabled = false;
      $("passkey-code-register").disabled = false;
    }
  }

  $("passkey-use").addEventListener("click", () => run(usePasskey, null));
  $("passkey-register").addEventListener("click", () => run(registerPasskey, "passkey.registered"));
  $("passkey-code-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const code = $("passkey-code").value;
    run((t) => registerWithCode(t, code), "passkey.registered").then(() => {
      $("passkey-code").value = "";
    });
  });
  function hide() {
    current = null;
    $("passkey").hidden = true;
  }

  return { show, hide, current: () => current };
}
