"use client";

import { authClient } from "@/lib/auth-client";

export function SignOutButton() {
  async function signOut() {
    await authClient.signOut();
    // A full load: the GraphQL client, its cache and its socket go with the old session.
    window.location.assign("/sign-in");
  }
  return (
    <button type="button" className="link" onClick={signOut}>
      Sign out
    </button>
  );
}
