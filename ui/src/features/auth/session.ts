// Remembers that this browser was signed in, so that a 401 later reads "session expired" rather than
// "not signed in". Only the address is kept; the session itself is an HttpOnly cookie.
const SIGNED_IN_AS = 'erigolem.signedInAs';

export function rememberSignIn(address: string): void {
  localStorage.setItem(SIGNED_IN_AS, address);
}

export function forgetSignIn(): void {
  localStorage.removeItem(SIGNED_IN_AS);
}

export function rememberedAddress(): string | null {
  return localStorage.getItem(SIGNED_IN_AS);
}
