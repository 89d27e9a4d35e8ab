package template

import (
	"strings"
	"testing"
)

func TestFormatPartition(t *testing.T) {
	tests := map[string]struct {
		dev  string
		n    any
		want string // "" for an error
	}{
		// Tinkerbell's two cases, as its formatPartition gives them.
		"nvme":          {"/dev/nvme0n1", 1, "/dev/nvme0n1p1"},
		"sd":            {"/dev/sda", 1, "/dev/sda1"},
		"sd two digits": {"/dev/sdab", 12, "/dev/sdab12"},
		// Where Tinkerbell returns the disk unchanged.
		"virtio":     {"/dev/vda", 2, "/dev/vda2"},
		"xen":        {"/dev/xvda", 1, "/dev/xvda1"},
		"ide":        {"/dev/hda", 3, "/dev/hda3"},
		"mmc":        {"/dev/mmcblk0", 1, "/dev/mmcblk0p1"},
		"loop":       {"/dev/loop7", 1, "/dev/loop7p1"},
		"md":         {"/dev/md127", 1, "/dev/md127p1"},
		"nbd":        {"/dev/nbd0", 2, "/dev/nbd0p2"},
		"by-id":      {"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", 1, "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part1"},
		"by-path":    {"/dev/disk/by-path/pci-0000:00:1f.2-ata-1", 2, "/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part2"},
		"string n":   {"/dev/nvme1n1", "2", "/dev/nvme1n1p2"},
		"int64 n":    {"/dev/sda", int64(3), "/dev/sda3"},
		"zero":       {"/dev/sda", 0, ""},
		"negative":   {"/dev/sda", -1, ""},
		"not number": {"/dev/sda", "root", ""},
		"float":      {"/dev/sda", 1.5, ""},
		"empty disk": {"", 1, ""},
		"directory":  {"/dev/", 1, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := FormatPartition(tc.dev, tc.n)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("FormatPartition(%q, %v) = %q, want an error", tc.dev, tc.n, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FormatPartition(%q, %v) = %q, %v; want %q", tc.dev, tc.n, got, err, tc.want)
			}
		})
	}
}

// TestFormatPartitionInTemplate calls it the ways templates do.
func TestFormatPartitionInTemplate(t *testing.T) {
	d := sample() // disks /dev/sda, /dev/nvme0n1
	d.Params["root_partition"] = "2"
	for in, want := range map[string]string{
		`{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}`:                        "/dev/sda1",
		`{{ formatPartition (index .Hardware.Disks 1) 1 }}`:                          "/dev/nvme0n1p1",
		`{{ formatPartition (.Hardware.Disks 1) (index .Params "root_partition") }}`: "/dev/nvme0n1p2",
		`{{ formatPartition "/dev/nvme0n1" 3 }}`:                                     "/dev/nvme0n1p3",
		`{{ if hasPrefix (index .Hardware.Disks 1) "/dev/nvme" }}nvme{{ end }}`:      "nvme",
		`{{ if contains (index .Hardware.Disks 0) "sd" }}sd{{ end }}`:                "sd",
		`{{ if hasSuffix (index .Hardware.Disks 0) "a" }}a{{ end }}`:                 "a",
	} {
		content := strings.Replace(minimal, "command: [true]", "command: [echo, '"+in+"']", 1)
		tpl, err := Render(content, d)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := tpl.Steps()[0].Command[1]; got != want {
			t.Errorf("%s = %q, want %q", in, got, want)
		}
	}
	content := strings.Replace(minimal, "command: [true]", `command: [echo, '{{ formatPartition (index .Hardware.Disks 0) 0 }}']`, 1)
	if _, err := Render(content, d); err == nil || !strings.Contains(err.Error(), "numbered from 1") {
		t.Errorf("partition 0: err = %v", err)
	}
}
