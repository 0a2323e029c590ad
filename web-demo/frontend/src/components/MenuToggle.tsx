/**
 * The button that unfolds the sidebar (occasions, lists, gift planner) on a narrow screen,
 * where the sidebar would otherwise push the page below it or scroll sideways. Hidden by CSS
 * on wider screens, where the sidebar is always shown.
 */
export function MenuToggle({ open, onToggle, controls }: { open: boolean; onToggle: () => void; controls: string }) {
  return (
    <button
      type="button"
      className="ghost menu-toggle"
      aria-expanded={open}
      aria-controls={controls}
      data-testid="menu-toggle"
      onClick={onToggle}
    >
      <svg width="1.1em" height="1.1em" viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" strokeWidth={2} strokeLinecap="round">
        {open ? <path d="M6 6l12 12M18 6L6 18" /> : <path d="M4 7h16M4 12h16M4 17h16" />}
      </svg>
      {open ? "Close menu" : "Lists & gift planner"}
    </button>
  );
}
