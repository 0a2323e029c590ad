/**
 * The page for an address that names nothing: a list id that does not exist (the API said
 * 404) or a route this UI does not have. It says so instead of showing another page.
 */
export function NotFound({ what }: { what?: string }) {
  return (
    <section className="not-found" data-testid="not-found" aria-labelledby="not-found-title">
      <h1 id="not-found-title">Not found</h1>
      <p>
        {what ? `There is no ${what}.` : "There is no page at this address."} It may have been deleted, or the link
        is wrong.
      </p>
      <p>
        <a href="#/" data-testid="not-found-home">
          Back to the first list
        </a>{" "}
        · <a href="#/gifts">Gift planner</a>
      </p>
    </section>
  );
}
