-- A PostgreSQL store as matchreplay wrote it at schema version 1 (before leases):
-- pg_dump --no-owner --no-privileges; loaded by one asyncpg execute.
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: matchreplay_insert_group(bigint[], bigint[], integer[], bigint[], bigint[], bytea[], bytea[], bigint[], bytea[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.matchreplay_insert_group(p_mkey bigint[], p_first_seq bigint[], p_count integer[], p_base_tick bigint[], p_last_tick bigint[], p_first_id bytea[], p_blob bytea[], p_types bigint[], p_checksum bytea[]) RETURNS TABLE(pos bigint, reason text, actual bigint, status text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    head bigint;
    keys bigint[];
    sts text[];
    vers bigint[];
    lts bigint[];
    k integer;
    accepted integer[] := '{}';
    positions bigint[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(30806552464875897);
    SELECT coalesce(max(b.position), 0) INTO head FROM batches b;
    SELECT array_agg(m.mkey), array_agg(m.status), array_agg(coalesce(h.version, 0)),
           array_agg(coalesce(h.last_tick, -1))
      INTO keys, sts, vers, lts
      FROM matches m LEFT JOIN LATERAL
           (SELECT b.first_seq + b.count - 1 AS version, b.last_tick FROM batches b
             WHERE b.mkey = m.mkey ORDER BY b.first_seq DESC LIMIT 1) h ON true
     WHERE m.mkey = ANY (p_mkey);
    FOR i IN 1 .. coalesce(array_length(p_mkey, 1), 0) LOOP
        k := array_position(keys, p_mkey[i]);
        pos := NULL; actual := 0; status := '';
        IF k IS NULL THEN
            reason := 'unknown';
        ELSIF sts[k] IN ('ended', 'interrupted') THEN
            reason := 'ended'; status := sts[k];
        ELSIF p_first_seq[i] - 1 <> vers[k] THEN
            reason := 'version'; actual := vers[k];
        ELSIF p_base_tick[i] < lts[k] THEN
            reason := 'tick'; actual := lts[k];
        ELSE
            reason := NULL;
            head := head + p_count[i];
            vers[k] := vers[k] + p_count[i];
            lts[k] := p_last_tick[i];
            accepted := accepted || i;
            positions := positions || head;
            pos := head;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF array_length(accepted, 1) > 0 THEN
        INSERT INTO batches
            (position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, types,
             checksum)
        SELECT positions[j], p_mkey[a], p_first_seq[a], p_count[a], p_base_tick[a],
               p_last_tick[a], p_first_id[a], p_blob[a], p_types[a], p_checksum[a]
          FROM generate_subscripts(accepted, 1) AS j, LATERAL (SELECT accepted[j] AS a) x;
        PERFORM pg_notify('matchreplay_commits', head::text);
    END IF;
END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: batches; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.batches (
    "position" bigint NOT NULL,
    mkey bigint NOT NULL,
    first_seq bigint NOT NULL,
    count integer NOT NULL,
    base_tick bigint NOT NULL,
    last_tick bigint NOT NULL,
    first_id bytea NOT NULL,
    blob bytea NOT NULL,
    types bigint,
    checksum bytea
);


--
-- Name: keyframes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.keyframes (
    mkey bigint NOT NULL,
    tick bigint NOT NULL,
    format_version integer NOT NULL,
    data bytea NOT NULL,
    checksum bytea NOT NULL
);


--
-- Name: matches; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.matches (
    mkey bigint NOT NULL,
    match_id text NOT NULL,
    game text NOT NULL,
    rules_version text NOT NULL,
    tick_rate integer NOT NULL,
    players text NOT NULL,
    settings text NOT NULL,
    seed bigint NOT NULL,
    created_at double precision NOT NULL,
    ended_at double precision,
    status text NOT NULL,
    options text DEFAULT '{}'::text NOT NULL
);


--
-- Name: matches_mkey_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.matches_mkey_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: matches_mkey_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.matches_mkey_seq OWNED BY public.matches.mkey;


--
-- Name: matchreplay_schema; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.matchreplay_schema (
    version integer NOT NULL
);


--
-- Name: matches mkey; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.matches ALTER COLUMN mkey SET DEFAULT nextval('public.matches_mkey_seq'::regclass);


--
-- Data for Name: batches; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.batches VALUES (4, 1, 1, 4, 0, 0, '\x00000000000000010000000000000000', '\x9496060100000000960601000100009606010002000096060100030000', 64, '\x35666257a4b22f7b');
INSERT INTO public.batches VALUES (6, 2, 1, 2, 0, 0, '\x00000000000000020000000000000000', '\x929606010000000096060100010000', 64, '\x2d5e6f6ec4771a6b');
INSERT INTO public.batches VALUES (10, 1, 5, 4, 1, 1, '\x00000000000000010000000000000004', '\x94960601000002ff960601000102ff960601000202ff960601000302ff', 64, '\xbbe0c43b3438cd7e');


--
-- Data for Name: keyframes; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.keyframes VALUES (1, 1, 1, '\x7374617465', '\x63636363636363636363636363636363');


--
-- Data for Name: matches; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.matches VALUES (1, 'old-running', 'contract-game', '1.0', 30, '["alice", "bob"]', '{"map": "arena"}', 42, 1000, NULL, 'running', '{}');
INSERT INTO public.matches VALUES (2, 'old-ended', 'contract-game', '1.0', 30, '["carol"]', '{}', 7, 1001, 1002, 'ended', '{}');


--
-- Data for Name: matchreplay_schema; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.matchreplay_schema VALUES (1);


--
-- Name: matches_mkey_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.matches_mkey_seq', 2, true);


--
-- Name: batches batches_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.batches
    ADD CONSTRAINT batches_pkey PRIMARY KEY ("position");


--
-- Name: keyframes keyframes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keyframes
    ADD CONSTRAINT keyframes_pkey PRIMARY KEY (mkey, tick);


--
-- Name: matches matches_match_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.matches
    ADD CONSTRAINT matches_match_id_key UNIQUE (match_id);


--
-- Name: matches matches_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.matches
    ADD CONSTRAINT matches_pkey PRIMARY KEY (mkey);


--
-- Name: batches_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX batches_seq ON public.batches USING btree (mkey, first_seq);


--
-- Name: batches_tick; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX batches_tick ON public.batches USING btree (mkey, last_tick);


--
-- Name: matches_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX matches_created ON public.matches USING btree (created_at, mkey);


--
-- Name: batches batches_mkey_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.batches
    ADD CONSTRAINT batches_mkey_fkey FOREIGN KEY (mkey) REFERENCES public.matches(mkey);


--
-- Name: keyframes keyframes_mkey_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keyframes
    ADD CONSTRAINT keyframes_mkey_fkey FOREIGN KEY (mkey) REFERENCES public.matches(mkey);


--
-- PostgreSQL database dump complete
--


