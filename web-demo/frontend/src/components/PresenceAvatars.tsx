// Who else is looking at a list right now: the family members present on its topic
// (`list:{id}`), from tidings presence (`usePresence`). On the list view the member viewing it
// joins (`join`: the others see them); in the sidebar the lists are only watched, so browsing
// the sidebar makes nobody appear anywhere.
import { useQuery } from "@tanstack/react-query";
import { usePresence } from "@tidings/client/react";
import { get } from "../api";
import type { Member } from "../types";
import { Avatar } from "./Avatar";
import "./PresenceAvatars.css";

/** A presence entry's colour when the member is not in the member list (e.g. added since). */
const UNKNOWN_COLOR = "#8a8580";

export function PresenceAvatars({
  topic,
  me,
  join = false,
  size = 24,
  testId,
}: {
  /** The topic whose present members are shown, e.g. `list:1`. */
  topic: string;
  /** The viewer's member id: not shown (one's own avatar is in the top bar). */
  me: number;
  /** Be present on the topic while shown (the list view), or only watch it (the sidebar). */
  join?: boolean;
  size?: number;
  testId: string;
}) {
  const present = usePresence(topic, { join });
  // The same query as the dashboard's: cached, no extra request.
  const members = useQuery({ queryKey: ["members"], queryFn: () => get<Member[]>("/members") });
  const others = present.filter((p) => p.user_id !== String(me));
  if (others.length === 0) return null;
  const names = others.map((p) => String(p.info.name ?? `member ${p.user_id}`));
  return (
    <span
      className="presence"
      data-testid={testId}
      title={`${names.join(", ")} ${others.length === 1 ? "is" : "are"} looking at this list`}
    >
      {others.map((p, i) => {
        const known = members.data?.find((m) => String(m.id) === p.user_id);
        return (
          <span key={p.user_id} className="presence-member" data-testid={`${testId}-${p.user_id}`}>
            <Avatar member={{ name: known?.name ?? names[i], color: known?.color ?? UNKNOWN_COLOR }} size={size} />
          </span>
        );
      })}
    </span>
  );
}
