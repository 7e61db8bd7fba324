import { headers } from "next/headers";
import Link from "next/link";
import { redirect } from "next/navigation";
import type { ReactNode } from "react";
import { Providers } from "@/components/Providers";
import { SignOutButton } from "@/components/SignOutButton";
import { auth } from "@/lib/auth";

/** The signed-in surface: proxy.ts only saw a cookie; the session is checked here for real. */
export default async function AppLayout({ children }: { children: ReactNode }) {
  const session = await auth.api.getSession({ headers: await headers() });
  if (!session) redirect("/sign-in");

  return (
    <div className="app">
      <header className="topbar">
        <nav>
          <Link href="/chat">Chat</Link>
          <Link href="/history">History</Link>
        </nav>
        <span className="muted" data-testid="signed-in-as">
          {session.user.name} · {session.user.email}
        </span>
        <SignOutButton />
      </header>
      <Providers>{children}</Providers>
    </div>
  );
}
