// Next 16's proxy (the renamed middleware): bounce signed-out visitors before render. It only
// checks that the session cookie EXISTS (no database hit here); the (app) layout validates the
// session with auth.api.getSession(), and the Rust API validates it again on every request.
import { NextResponse, type NextRequest } from "next/server";
import { getSessionCookie } from "better-auth/cookies";

export function proxy(request: NextRequest) {
  if (!getSessionCookie(request)) {
    return NextResponse.redirect(new URL("/sign-in", request.url));
  }
  return NextResponse.next();
}

export const config = {
  matcher: ["/chat/:path*", "/history/:path*"],
};
