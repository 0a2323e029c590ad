// The token recipe of the package README ("Tokens from a Node backend"), as a backend would
// write it: an HS256 JWT signed with tidings' JWT_SECRET, with `sub`, `exp` and the topics the
// user may subscribe to.
import { SignJWT } from "jose";

export async function subscriberToken(jwtSecret: string, userId: string, topics: string[]): Promise<string> {
  const secret = new TextEncoder().encode(jwtSecret); // the same secret as tidings
  return new SignJWT({ topics })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime("15m")
    .sign(secret);
}
