"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useState, type FormEvent } from "react";
import { authClient } from "@/lib/auth-client";
import type { ApiError } from "@/lib/errors";
import { ErrorList } from "./ErrorList";

/** Sign-in and sign-up through Better Auth (this app's /api/auth), then into /chat. */
export function AuthForm({ mode }: { mode: "sign-in" | "sign-up" }) {
  const router = useRouter();
  const [errors, setErrors] = useState<ApiError[]>([]);
  const [pending, setPending] = useState(false);
  const signUp = mode === "sign-up";

  async function onSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email"));
    const password = String(form.get("password"));
    setPending(true);
    setErrors([]);
    const { error } = signUp
      ? await authClient.signUp.email({ email, password, name: String(form.get("name")) })
      : await authClient.signIn.email({ email, password });
    setPending(false);
    if (error) {
      setErrors([{ message: error.message ?? error.statusText, code: error.code }]);
      return;
    }
    router.replace("/chat");
    router.refresh();
  }

  return (
    <main className="auth">
      <h1>{signUp ? "Create your account" : "Sign in"}</h1>
      <form onSubmit={onSubmit} className="stack">
        {signUp && (
          <label>
            Name
            <input name="name" required autoComplete="name" maxLength={256} />
          </label>
        )}
        <label>
          Email
          <input name="email" type="email" required autoComplete="email" />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            required
            minLength={8}
            maxLength={128}
            autoComplete={signUp ? "new-password" : "current-password"}
          />
        </label>
        <button type="submit" disabled={pending}>
          {pending ? "…" : signUp ? "Sign up" : "Sign in"}
        </button>
      </form>
      <ErrorList errors={errors} testId="auth-error" />
      <p className="muted">
        {signUp ? (
          <>Already have an account? <Link href="/sign-in">Sign in</Link></>
        ) : (
          <>New here? <Link href="/sign-up">Create an account</Link></>
        )}
      </p>
    </main>
  );
}
