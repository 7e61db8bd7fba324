"use client";
// Better Auth's React client: same-origin calls to /api/auth/* on this app.
import { createAuthClient } from "better-auth/react";

export const authClient = createAuthClient();
