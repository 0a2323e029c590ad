// Shapes of the demo's REST API (web-demo/backend/src/model.rs). The realtime wire types
// (WSEvent, EventType, ...) are not defined here: they come from @tidings/bindings.

export type ItemStatus = "IDEA" | "SELECTED" | "PURCHASED" | "RECEIVED";
export const ITEM_STATUSES: ItemStatus[] = ["IDEA", "SELECTED", "PURCHASED", "RECEIVED"];

/** What the recipient of a list sees instead of an item's status: it is a surprise. */
export const HIDDEN = "HIDDEN";

export type GiftStatus = "PLANNED" | "PURCHASED" | "WRAPPED" | "GIVEN";
export const GIFT_STATUSES: GiftStatus[] = ["PLANNED", "PURCHASED", "WRAPPED", "GIVEN"];

export interface Member {
  id: number;
  name: string;
  color: string;
}

export interface Session {
  token: string;
  member: Member;
}

export interface Occasion {
  id: number;
  name: string;
  date: string;
  notes: string;
}

export interface ListSummary {
  id: number;
  name: string;
  occasion_id: number | null;
  occasion_name: string | null;
  recipient_id: number | null;
  recipient_name: string | null;
  item_count: number;
  /** `null` for the list's recipient: what was bought is a surprise. */
  done_count: number | null;
}

export interface Comment {
  id: number;
  item_id: number;
  member_id: number;
  member_name: string;
  body: string;
  created_at: string;
}

export interface Item {
  id: number;
  list_id: number;
  list_name: string;
  /** Whom the list is for; that member gets the item with status "HIDDEN", no assignee and no comments. */
  recipient_id: number | null;
  name: string;
  notes: string;
  status: ItemStatus | typeof HIDDEN;
  assignee_id: number | null;
  assignee_name: string | null;
  created_by: number;
  created_by_name: string;
  created_at: string;
  updated_at: string;
  comments: Comment[];
}

export interface ListDetail extends ListSummary {
  items: Item[];
}

export interface Gift {
  id: number;
  occasion_id: number;
  occasion_name: string;
  recipient_id: number;
  recipient_name: string;
  giver_id: number | null;
  giver_name: string | null;
  name: string;
  notes: string;
  status: GiftStatus;
  created_at: string;
  updated_at: string;
}

export interface OccasionDetail extends Occasion {
  lists: ListSummary[];
  gifts: Gift[];
}
