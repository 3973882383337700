-- The knowledge base: articles in categories, one language each (a zh and an en article that translate
-- each other share a translation_group), each edit a new row of the append-only aicc.kb_versions.
-- An article's status says whether search sees it: draft (never published), published (search and, if
-- public, the bot see published_version, whatever newer drafts exist), archived (nobody's search).
-- visibility is the audience of the published text: internal (agents) or public (customers, the bot).

CREATE TABLE aicc.kb_categories (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,40}$'),
    title_zh   text NOT NULL CHECK (length(title_zh) BETWEEN 1 AND 100),
    title_en   text NOT NULL CHECK (length(title_en) BETWEEN 1 AND 100),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE aicc.kb_articles (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    language          text NOT NULL CHECK (language IN ('zh', 'en')),
    category          text NOT NULL REFERENCES aicc.kb_categories(name),
    translation_group text CHECK (translation_group ~ '^[a-z0-9][a-z0-9._-]{0,80}$'),
    visibility        text NOT NULL DEFAULT 'internal' CHECK (visibility IN ('internal', 'public')),
    status            text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'archived')),
    latest_version    integer NOT NULL DEFAULT 1 CHECK (latest_version >= 1),
    published_version integer,
    -- Bumped by every change of the article (a version, publishing, archiving, a field): the sum over
    -- all articles is the cache marker of aicc.appliance.kb.store.revision, which must change with
    -- every committed change, whatever order concurrent transactions commit in.
    changes           bigint NOT NULL DEFAULT 1,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (published_version BETWEEN 1 AND latest_version),
    CHECK (status = 'draft' OR published_version IS NOT NULL),
    UNIQUE (translation_group, language)
);
CREATE INDEX kb_articles_status ON aicc.kb_articles (status, visibility);
CREATE INDEX kb_articles_category ON aicc.kb_articles (category);

CREATE TABLE aicc.kb_versions (
    article_id bigint NOT NULL REFERENCES aicc.kb_articles(id),
    version    integer NOT NULL CHECK (version >= 1),
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body       text NOT NULL CHECK (octet_length(body) <= 100000),
    tags       text[] NOT NULL DEFAULT '{}',
    author     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (article_id, version)
);
CREATE TRIGGER kb_versions_append_only BEFORE UPDATE OR DELETE ON aicc.kb_versions
    FOR EACH ROW EXECUTE FUNCTION aicc.refuse_change();
CREATE TRIGGER kb_versions_no_truncate BEFORE TRUNCATE ON aicc.kb_versions
    FOR EACH STATEMENT EXECUTE FUNCTION aicc.refuse_change();

-- Articles need a category: a site starts with one.
INSERT INTO aicc.kb_categories (name, title_zh, title_en) VALUES ('general', '通用', 'General');
