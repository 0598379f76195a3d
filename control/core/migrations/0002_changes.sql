-- The change feed: which documents each revision touched, so that another
-- controller catches up by reading the changes since its revision (deltas)
-- instead of reloading every document. Pruned to the recent past; a
-- controller further behind reloads.
CREATE TABLE IF NOT EXISTS changes (
    rev  BIGINT NOT NULL,
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    PRIMARY KEY (rev, kind, id)
);
