package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/store"
)

// rotateDataKeyCmd re-encrypts stored results and conversations under the
// current data key.
func rotateDataKeyCmd(getenv func(string) string) *cobra.Command {
	var batch int
	cmd := &cobra.Command{
		Use:   "rotate-data-key [--batch 500]",
		Short: "Re-encrypt stored results and conversations under the current encryption key",
		Long: `Re-encrypt every job result and conversation message that is not encrypted
under the current key of CLAUDEQ_ENCRYPTION_KEYS (the first one): records
under older keys, and plaintext written before encryption was turned on.

To rotate: put a new key first in CLAUDEQ_ENCRYPTION_KEYS and keep the old
ones after it ("k2:NEW,k1:OLD"), roll that out to every api, worker and
scheduler, then run this command with the same setting. When it has
finished, no record needs the old keys and they can be removed. It works in
batches, can be interrupted and run again, and is safe while the gateway
runs. Against a running claudeq dev without CLAUDEQ_ENCRYPTION_KEYS it uses
the dev key in CLAUDEQ_DATA_DIR.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := config.Load(getenv)
			if err != nil {
				return err
			}
			ring := cfg.EncryptionRing()
			if ring == nil && cfg.MongoURI == "" {
				// claudeq dev keeps its key in the data directory.
				spec, _, err := crypt.LoadOrCreateDevKey(cfg.DataDir)
				if err != nil {
					return err
				}
				if ring, err = crypt.ParseKeys(spec); err != nil {
					return err
				}
			}
			if ring == nil {
				return errors.New("CLAUDEQ_ENCRYPTION_KEYS is empty: give the key ring, the new key first")
			}
			s, closeFn, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			s.SetKeyRing(ring)
			errw := c.ErrOrStderr()
			st, err := s.ReencryptAll(c.Context(), batch, func(st store.ReencryptStats) {
				fmt.Fprintf(errw, "re-encrypted %d job results (of %d scanned), %d messages (in %d conversations scanned)\n",
					st.JobsReencrypted, st.JobsScanned, st.MessagesReencrypted, st.ConversationsScanned)
			})
			if err != nil {
				return fmt.Errorf("after %d job results and %d messages: %w (run it again to continue)", st.JobsReencrypted, st.MessagesReencrypted, err)
			}
			fmt.Fprintf(c.OutOrStdout(), "done: every stored result and message is encrypted under key %q (%d job results and %d messages rewritten; %d jobs and %d conversations scanned)\n",
				ring.Current(), st.JobsReencrypted, st.MessagesReencrypted, st.JobsScanned, st.ConversationsScanned)
			return nil
		},
	}
	cmd.Flags().IntVar(&batch, "batch", 500, "records per bulk write")
	return cmd
}
