import type { Member } from "../types";

export function Avatar({ member, size = 28 }: { member: Pick<Member, "name" | "color">; size?: number }) {
  return (
    <span
      className="avatar"
      title={member.name}
      style={{ background: member.color, width: size, height: size, fontSize: size * 0.42 }}
    >
      {member.name.slice(0, 1)}
    </span>
  );
}
